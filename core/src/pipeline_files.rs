//! Which pipeline file a codec uses.
//!
//! A codec has an ordered list of gst-launch files in the pipelines directory:
//!
//! - `<codec>.d/*.pipeline`, in byte order of their names (`10-va.pipeline` before
//!   `90-x264.pipeline`), if the directory `<codec>.d` exists. Only names ending in `.pipeline`
//!   count and names starting with `.` do not, so a file is switched off by renaming it
//!   (`10-va.pipeline.off`) and editor backups are ignored.
//! - otherwise `<codec>.pipeline` alone (the layout before `.d` directories; an admin's own
//!   file keeps working). A `<codec>.pipeline` next to a `<codec>.d` is ignored, with a warning.
//!
//! At start-up each file is tried in order: it must parse with every element present here, then
//! start (see [`crate::encoder::probe`]). The first that does is the codec's pipeline; the files
//! after it are kept as fallbacks for run time (the encoder hub moves on to the next one when a
//! pipeline keeps failing). [`Choice::summary`] is the start-up line that says which file was
//! chosen and why each earlier one was skipped.

use std::path::{Path, PathBuf};

use crate::encoder;
use crate::proto::VideoCodec;

/// One pipeline file of a codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineFile {
    /// The file.
    pub path: PathBuf,
    /// Its path relative to the pipelines directory: `h264.d/10-va.pipeline`, `vp8.pipeline`.
    pub label: String,
}

impl PipelineFile {
    /// The name without `.pipeline`, as the start-up line names skipped files: `10-va`.
    pub fn short_name(&self) -> &str {
        let name = self.label.rsplit('/').next().unwrap_or(&self.label);
        name.strip_suffix(".pipeline").unwrap_or(name)
    }
}

/// A codec's pipeline files, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub files: Vec<PipelineFile>,
    /// A `<codec>.pipeline` that is ignored because `<codec>.d` exists.
    pub shadowed: Option<PathBuf>,
}

/// The pipeline files of the codec named `name` (`h264`) in `dir`, in the order they are tried.
/// Fails if there is none: no `<name>.d` and no `<name>.pipeline`, or a `<name>.d` without an
/// enabled file.
pub fn list(dir: &Path, name: &str) -> Result<Listing, String> {
    let d = dir.join(format!("{name}.d"));
    let plain = dir.join(format!("{name}.pipeline"));
    if d.is_dir() {
        let entries = std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", d.display()))?;
            let file_name = entry.file_name();
            let Some(n) = file_name.to_str() else {
                continue;
            };
            if n.starts_with('.') || !n.ends_with(".pipeline") || !entry.path().is_file() {
                continue;
            }
            names.push(n.to_owned());
        }
        // Byte order, whatever the locale: "10-…" < "20-…" < "90-…".
        names.sort_unstable();
        if names.is_empty() {
            return Err(format!("{}/ holds no enabled *.pipeline file", d.display()));
        }
        let files = names
            .into_iter()
            .map(|n| PipelineFile {
                path: d.join(&n),
                label: format!("{name}.d/{n}"),
            })
            .collect();
        let shadowed = plain.exists().then_some(plain);
        return Ok(Listing { files, shadowed });
    }
    match std::fs::metadata(&plain) {
        Ok(_) => Ok(Listing {
            files: vec![PipelineFile {
                path: plain,
                label: format!("{name}.pipeline"),
            }],
            shadowed: None,
        }),
        Err(e) => Err(format!(
            "{}: {e}; no {}/ either",
            plain.display(),
            d.display()
        )),
    }
}

/// The file a codec uses, the files skipped before it and those kept for later.
#[derive(Debug, Clone)]
pub struct Choice {
    pub codec: VideoCodec,
    /// The file in use and its gst-launch text (comments stripped).
    pub chosen: PipelineFile,
    pub text: String,
    /// Files tried before it, with the reason each was skipped.
    pub skipped: Vec<(PipelineFile, String)>,
    /// The files after it (not tried yet), with their text: the hub's fallbacks at run time.
    pub fallbacks: Vec<(PipelineFile, String)>,
    /// A `<codec>.pipeline` ignored because `<codec>.d` exists.
    pub shadowed: Option<PathBuf>,
}

impl Choice {
    /// The start-up line: `codec h264: using h264.d/90-x264.pipeline (skipped 10-va: missing
    /// element vah264enc; 20-nvcodec: …)`, and the fallbacks if the chosen file is not the last.
    pub fn summary(&self) -> String {
        let mut notes = Vec::new();
        if !self.skipped.is_empty() {
            let skipped: Vec<String> = self
                .skipped
                .iter()
                .map(|(f, why)| format!("{}: {why}", f.short_name()))
                .collect();
            notes.push(format!("skipped {}", skipped.join("; ")));
        }
        if !self.fallbacks.is_empty() {
            let later: Vec<&str> = self.fallbacks.iter().map(|(f, _)| f.short_name()).collect();
            notes.push(format!("if it keeps failing: {}", later.join(", ")));
        }
        let mut line = format!("codec {}: using {}", self.codec, self.chosen.label);
        if !notes.is_empty() {
            line.push_str(&format!(" ({})", notes.join("; ")));
        }
        line
    }

    /// The chosen file then the fallbacks, as (label, text): what the encoder hub starts.
    pub fn variants(&self) -> Vec<(String, String)> {
        std::iter::once((self.chosen.label.clone(), self.text.clone()))
            .chain(
                self.fallbacks
                    .iter()
                    .map(|(f, t)| (f.label.clone(), t.clone())),
            )
            .collect()
    }
}

/// Reads a pipeline file without its comment lines; an empty one is an error.
pub fn read_text(file: &PipelineFile) -> Result<String, String> {
    let raw = std::fs::read_to_string(&file.path).map_err(|e| format!("cannot read it: {e}"))?;
    let text = encoder::pipeline_text(&raw);
    if text.trim().is_empty() {
        return Err("no pipeline in it (comments only)".into());
    }
    Ok(text)
}

/// Tries `codec`'s files in `dir` in order; the first whose text `probe` accepts wins. Fails,
/// with every file's reason, if none does.
pub fn choose(
    dir: &Path,
    codec: VideoCodec,
    probe: &dyn Fn(&str) -> Result<(), String>,
) -> Result<Choice, String> {
    let Listing { files, shadowed } = list(dir, codec.name())?;
    let mut skipped = Vec::new();
    let mut rest = files.into_iter();
    for file in rest.by_ref() {
        match read_text(&file).and_then(|text| probe(&text).map(|()| text)) {
            Ok(text) => {
                let fallbacks = rest
                    .filter_map(|f| read_text(&f).ok().map(|t| (f, t)))
                    .collect();
                return Ok(Choice {
                    codec,
                    chosen: file,
                    text,
                    skipped,
                    fallbacks,
                    shadowed,
                });
            }
            Err(why) => skipped.push((file, why)),
        }
    }
    Err(skipped
        .iter()
        .map(|(f, why)| format!("{}: {why}", f.label))
        .collect::<Vec<_>>()
        .join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "spice-shim-pipeline-files-{tag}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }

        fn write(&self, rel: &str, text: &str) {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn labels(l: &Listing) -> Vec<&str> {
        l.files.iter().map(|f| f.label.as_str()).collect()
    }

    #[test]
    fn a_d_directory_is_read_in_name_order_and_renamed_files_are_off() {
        let d = Dir::new("order");
        for name in [
            "90-x264.pipeline",
            "10-va.pipeline",
            "40-v4l2.pipeline",
            "20-nvcodec.pipeline.off",
            "30-qsv.pipeline~",
            ".10-va.pipeline.swp",
            ".#05-local.pipeline",
            "README",
        ] {
            d.write(&format!("h264.d/{name}"), "# x\nfakesrc ! fakesink\n");
        }
        std::fs::create_dir(d.0.join("h264.d/50-dir.pipeline")).unwrap();
        let l = list(&d.0, "h264").unwrap();
        assert_eq!(
            labels(&l),
            [
                "h264.d/10-va.pipeline",
                "h264.d/40-v4l2.pipeline",
                "h264.d/90-x264.pipeline"
            ]
        );
        assert_eq!(l.files[0].path, d.0.join("h264.d/10-va.pipeline"));
        assert_eq!(l.files[0].short_name(), "10-va");
        assert_eq!(l.shadowed, None);
    }

    #[test]
    fn the_d_directory_wins_over_a_plain_file_which_is_used_alone_otherwise() {
        let d = Dir::new("precedence");
        d.write("vp8.pipeline", "fakesrc ! fakesink");
        let l = list(&d.0, "vp8").unwrap();
        assert_eq!(labels(&l), ["vp8.pipeline"]);
        assert_eq!(l.files[0].short_name(), "vp8");
        assert_eq!(l.shadowed, None);

        d.write("vp8.d/50-mine.pipeline", "fakesrc ! fakesink");
        let l = list(&d.0, "vp8").unwrap();
        assert_eq!(labels(&l), ["vp8.d/50-mine.pipeline"]);
        assert_eq!(l.shadowed, Some(d.0.join("vp8.pipeline")));

        // A .d directory with every file switched off is not replaced by the plain file.
        std::fs::rename(
            d.0.join("vp8.d/50-mine.pipeline"),
            d.0.join("vp8.d/50-mine.pipeline.off"),
        )
        .unwrap();
        let e = list(&d.0, "vp8").unwrap_err();
        assert!(
            e.ends_with("vp8.d/ holds no enabled *.pipeline file"),
            "{e}"
        );

        let e = list(&d.0, "h265").unwrap_err();
        assert!(
            e.starts_with(&format!("{}: ", d.0.join("h265.pipeline").display())),
            "{e}"
        );
        assert!(e.ends_with("h265.d/ either"), "{e}");
    }

    #[test]
    fn the_first_file_the_probe_accepts_wins_and_the_line_says_why_others_were_skipped() {
        let d = Dir::new("choose");
        d.write("h264.d/10-va.pipeline", "# VA\nneeds vah264enc\n");
        d.write("h264.d/20-nvcodec.pipeline", "needs nvh264enc\n");
        d.write("h264.d/30-empty.pipeline", "# only a comment\n");
        d.write("h264.d/50-fails.pipeline", "fails to start\n");
        d.write("h264.d/90-x264.pipeline", "# software\nworks x264\n");
        d.write("h264.d/95-later.pipeline", "works later\n");
        d.write("h264.pipeline", "works but shadowed\n");
        let probe = |text: &str| -> Result<(), String> {
            if let Some(e) = text.strip_prefix("needs ") {
                Err(format!("missing element {e}"))
            } else if text.starts_with("fails") {
                Err("does not start: state change failed".into())
            } else {
                Ok(())
            }
        };
        let c = choose(&d.0, VideoCodec::H264, &probe).unwrap();
        assert_eq!(c.chosen.label, "h264.d/90-x264.pipeline");
        assert_eq!(c.text, "works x264");
        assert_eq!(c.shadowed, Some(d.0.join("h264.pipeline")));
        assert_eq!(
            c.summary(),
            "codec h264: using h264.d/90-x264.pipeline (skipped 10-va: missing element \
             vah264enc; 20-nvcodec: missing element nvh264enc; 30-empty: no pipeline in it \
             (comments only); 50-fails: does not start: state change failed; if it keeps \
             failing: 95-later)"
        );
        assert_eq!(
            c.variants(),
            [
                (
                    "h264.d/90-x264.pipeline".to_string(),
                    "works x264".to_string()
                ),
                (
                    "h264.d/95-later.pipeline".to_string(),
                    "works later".to_string()
                ),
            ]
        );

        // The first file works: nothing skipped, nothing after it.
        let c = choose(&d.0, VideoCodec::H264, &|_: &str| Ok(())).unwrap();
        assert_eq!(c.chosen.label, "h264.d/10-va.pipeline");
        assert_eq!(c.fallbacks.len(), 4);
        assert!(c.skipped.is_empty());

        // None works: every reason, by label.
        let e = choose(&d.0, VideoCodec::H264, &|_: &str| Err("no".into())).unwrap_err();
        assert_eq!(
            e,
            "h264.d/10-va.pipeline: no; h264.d/20-nvcodec.pipeline: no; h264.d/30-empty.pipeline: \
             no pipeline in it (comments only); h264.d/50-fails.pipeline: no; \
             h264.d/90-x264.pipeline: no; h264.d/95-later.pipeline: no"
        );

        // A plain file alone.
        d.write("mjpeg.pipeline", "works jpeg\n");
        let c = choose(&d.0, VideoCodec::Mjpeg, &probe).unwrap();
        assert_eq!(c.summary(), "codec mjpeg: using mjpeg.pipeline");
    }

    #[test]
    fn the_shipped_directory_lists_hardware_first_and_software_last() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../pipelines"));
        let l = list(dir, "h264").unwrap();
        assert_eq!(
            labels(&l),
            [
                "h264.d/10-va.pipeline",
                "h264.d/20-nvcodec.pipeline",
                "h264.d/30-qsv.pipeline",
                "h264.d/40-v4l2.pipeline",
                "h264.d/90-x264.pipeline"
            ]
        );
        assert_eq!(l.shadowed, None);
        let l = list(dir, "h265").unwrap();
        assert_eq!(
            labels(&l),
            ["h265.d/10-va.pipeline", "h265.d/90-x265.pipeline"]
        );
        for codec in ["mjpeg", "vp8", "vp9"] {
            assert_eq!(
                labels(&list(dir, codec).unwrap()),
                [format!("{codec}.pipeline")]
            );
        }
    }
}
