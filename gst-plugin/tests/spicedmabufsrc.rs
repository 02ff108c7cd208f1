//! Pipeline tests of `spicedmabufsrc`: zero copy, strides, decoded colours, renegotiation,
//! release notifications, refusal of bad scanouts.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstspicedmabuf::{
    DrawError, DrawRelease, DrawStatus, Plane, Rect, Scanout, ScanoutError, ScanoutInfo,
    SpiceDmabufSrc,
};
use test_guest::{GuestBuffer, Image, Pattern, check_bars, check_upright_bars, render};

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstspicedmabuf::plugin_register_static().unwrap();
    });
}

/// Collects every release notification by draw id.
#[derive(Clone, Default)]
struct Releases(Arc<Mutex<HashMap<u64, Vec<DrawStatus>>>>);

impl Releases {
    fn release(&self, id: u64) -> DrawRelease {
        let map = self.0.clone();
        DrawRelease::new(id, move |id, status| {
            map.lock().unwrap().entry(id).or_default().push(status)
        })
    }

    fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.0.lock().unwrap().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Asserts ids 0..n each fired exactly once; returns the count per status.
    fn assert_each_once(&self, n: u64) -> HashMap<DrawStatus, usize> {
        self.wait_for(n as usize);
        let map = self.0.lock().unwrap();
        let mut counts = HashMap::new();
        for id in 0..n {
            let v = map
                .get(&id)
                .unwrap_or_else(|| panic!("draw {id} never released"));
            assert_eq!(v.len(), 1, "draw {id} released {} times: {v:?}", v.len());
            *counts.entry(v[0]).or_default() += 1;
        }
        assert_eq!(map.len() as u64, n, "releases for unknown draws: {map:?}");
        counts
    }
}

fn scanout_of(buf: &GuestBuffer, y0_top: bool) -> Arc<Scanout> {
    let info = ScanoutInfo {
        width: buf.width(),
        height: buf.height(),
        fourcc: buf.fourcc(),
        modifier: 0,
        y0_top,
        planes: buf
            .planes()
            .iter()
            .map(|p| Plane {
                fd_index: 0,
                offset: p.offset,
                stride: p.stride,
            })
            .collect(),
    };
    Arc::new(Scanout::new(info, vec![buf.dup_fd().unwrap()]).unwrap())
}

fn file_identity(fd: i32) -> (u64, u64) {
    // SAFETY: the fd is open for the duration of the call (held by the buffer or the scanout).
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let st = rustix::fs::fstat(fd).unwrap();
    (st.st_dev, st.st_ino)
}

fn full(buf: &GuestBuffer) -> Rect {
    Rect {
        x: 0,
        y: 0,
        w: buf.width(),
        h: buf.height(),
    }
}

fn pipeline(desc: &str) -> (gst::Pipeline, SpiceDmabufSrc) {
    let p = gst::parse::launch(desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let src = p
        .by_name("src")
        .unwrap()
        .downcast::<SpiceDmabufSrc>()
        .unwrap();
    (p, src)
}

fn appsink(p: &gst::Pipeline, name: &str) -> gst_app::AppSink {
    p.by_name(name).unwrap().downcast().unwrap()
}

fn pull(sink: &gst_app::AppSink) -> gst::Sample {
    sink.try_pull_sample(gst::ClockTime::from_seconds(30))
        .expect("no sample within 30 s")
}

fn start(p: &gst::Pipeline) {
    p.set_state(gst::State::Playing).unwrap();
}

/// appsink keeps a reference to the last buffer it handed out (its cached sample, or its
/// preroll buffer) until the next one. Tests that watch a buffer's release push and pull one
/// more frame after dropping theirs.
fn flush_appsink(src: &SpiceDmabufSrc, sink: &gst_app::AppSink, scanout: &Arc<Scanout>) {
    src.push_scanout(Some(scanout.clone()));
    let r = Rect {
        x: 0,
        y: 0,
        w: scanout.width(),
        h: scanout.height(),
    };
    src.push_draw(r, DrawRelease::new(u64::MAX, |_, _| {}))
        .unwrap();
    drop(pull(sink));
}

#[test]
fn buffers_wrap_the_scanout_fd_with_real_strides() {
    init();
    let mut buf = GuestBuffer::with_layout(1920, 1080, 7936, 0).unwrap();
    render(Pattern::Bars, 0, &mut buf);
    let scanout = scanout_of(&buf, true);
    let scanout_fd = scanout.fds()[0].as_raw_fd();
    let (p, src) =
        pipeline("spicedmabufsrc name=src ! appsink name=sink sync=false enable-last-sample=false");
    start(&p);
    let releases = Releases::default();
    src.push_scanout(Some(scanout.clone()));
    src.push_draw(full(&buf), releases.release(0)).unwrap();
    let sample = pull(&appsink(&p, "sink"));
    let buffer = sample.buffer().unwrap();
    assert_eq!(buffer.n_memory(), 1);
    let mem = buffer.peek_memory(0);
    let dmabuf = mem
        .downcast_memory_ref::<gst_allocators::DmaBufMemory>()
        .expect("a dmabuf memory");
    // The memory maps the scanout's own buffer (through the import cache's dup of its fd):
    // same file, no copy; and it is the very memory the guest renders into.
    assert_eq!(
        file_identity(dmabuf.fd()),
        file_identity(scanout_fd),
        "the memory wraps the scanout's buffer"
    );
    let map = mem.map_readable().unwrap();
    assert_eq!(&map[..4], &buf.pixels()[..4]);
    drop(map);
    assert_eq!(mem.size(), 7936 * 1080);
    let meta = buffer.meta::<gst_video::VideoMeta>().expect("VideoMeta");
    assert_eq!(meta.stride(), &[7936]);
    assert_eq!(meta.offset(), &[0]);
    assert_eq!((meta.width(), meta.height()), (1920, 1080));
    assert!(buffer.pts().is_some(), "timestamped on arrival");
    let caps = sample.caps().unwrap().to_owned();
    let s = caps.structure(0).unwrap();
    assert_eq!(s.get::<&str>("format").unwrap(), "BGRx");

    // The release fires only when GStreamer frees the memory, not when the buffer is pushed.
    assert!(
        releases.0.lock().unwrap().is_empty(),
        "released while still in use"
    );
    drop(sample);
    flush_appsink(&src, &appsink(&p, "sink"), &scanout);
    let counts = releases.assert_each_once(1);
    assert_eq!(counts[&DrawStatus::Released], 1);
    p.set_state(gst::State::Null).unwrap();
}

#[test]
fn nv12_planes_get_one_memory_each() {
    init();
    let buf = GuestBuffer::new_nv12(640, 480).unwrap();
    let scanout = scanout_of(&buf, true);
    let (p, src) =
        pipeline("spicedmabufsrc name=src ! appsink name=sink sync=false enable-last-sample=false");
    start(&p);
    let releases = Releases::default();
    src.push_scanout(Some(scanout.clone()));
    src.push_draw(full(&buf), releases.release(0)).unwrap();
    let sample = pull(&appsink(&p, "sink"));
    let buffer = sample.buffer().unwrap();
    assert_eq!(buffer.n_memory(), 2);
    let meta = buffer.meta::<gst_video::VideoMeta>().unwrap();
    let y_size = buf.planes()[0].stride as usize * 480;
    assert_eq!(meta.offset(), &[0, y_size]);
    assert_eq!(
        buffer.peek_memory(1).size(),
        buf.planes()[1].stride as usize * 240
    );
    drop(sample);
    flush_appsink(&src, &appsink(&p, "sink"), &scanout);
    releases.assert_each_once(1);
    p.set_state(gst::State::Null).unwrap();
}

#[test]
fn bars_decode_with_the_right_colours() {
    init();
    let mut buf = GuestBuffer::with_layout(640, 480, 2816, 0).unwrap();
    render(Pattern::Bars, 3, &mut buf);
    let (p, src) = pipeline(
        "spicedmabufsrc name=src ! videoconvert ! video/x-raw,format=I420 ! \
         x264enc tune=zerolatency speed-preset=ultrafast ! avdec_h264 max-threads=1 ! videoconvert ! \
         video/x-raw,format=RGB ! appsink name=sink sync=false enable-last-sample=false",
    );
    start(&p);
    let releases = Releases::default();
    src.push_scanout(Some(scanout_of(&buf, true)));
    src.push_draw(full(&buf), releases.release(0)).unwrap();
    let sample = pull(&appsink(&p, "sink"));
    let frame = sample.buffer().unwrap().map_readable().unwrap();
    let image = Image::new(640, 480, frame.as_slice()[..640 * 480 * 3].to_vec()).unwrap();
    check_bars(&image, 48).unwrap();
    check_upright_bars(&image, 48).unwrap();
    drop(frame);
    releases.assert_each_once(1);
    p.set_state(gst::State::Null).unwrap();
}

#[test]
fn bottom_up_scanouts_are_flipped_by_videoflip_auto() {
    init();
    let (w, h) = (320u32, 240u32);
    let mut upright = GuestBuffer::new(w, h).unwrap();
    render(Pattern::Bars, 0, &mut upright);
    // Store the picture bottom-up, as a GL renderer does.
    let mut buf = GuestBuffer::new(w, h).unwrap();
    let stride = (w * 4) as usize;
    for row in 0..h as usize {
        let src_row = upright.pixels()[row * stride..(row + 1) * stride].to_vec();
        let dst = (h as usize - 1 - row) * stride;
        buf.pixels_mut()[dst..dst + stride].copy_from_slice(&src_row);
    }
    let (p, src) = pipeline(
        "spicedmabufsrc name=src ! videoflip video-direction=auto ! videoconvert ! \
         video/x-raw,format=RGB ! appsink name=sink sync=false enable-last-sample=false",
    );
    start(&p);
    let releases = Releases::default();
    src.push_scanout(Some(scanout_of(&buf, false)));
    src.push_draw(full(&buf), releases.release(0)).unwrap();
    let sample = pull(&appsink(&p, "sink"));
    let frame = sample.buffer().unwrap().map_readable().unwrap();
    let image = Image::new(w, h, frame.as_slice()[..(w * h * 3) as usize].to_vec()).unwrap();
    check_upright_bars(&image, 8).unwrap();
    drop(frame);
    drop(sample);
    releases.assert_each_once(1);
    p.set_state(gst::State::Null).unwrap();
}

fn has_sps(data: &[u8]) -> bool {
    data.windows(4)
        .any(|w| w[0] == 0 && w[1] == 0 && w[2] == 1 && (w[3] & 0x1f) == 7)
}

#[test]
fn a_size_change_renegotiates_with_a_new_idr() {
    init();
    let (p, src) = pipeline(
        "spicedmabufsrc name=src ! videoconvert ! video/x-raw,format=I420 ! \
         x264enc tune=zerolatency speed-preset=ultrafast key-int-max=1000 ! \
         video/x-h264,stream-format=byte-stream,alignment=au ! tee name=t \
         t. ! queue ! appsink name=h264 sync=false \
         t. ! queue ! avdec_h264 max-threads=1 ! appsink name=raw sync=false",
    );
    start(&p);
    let releases = Releases::default();
    let h264 = appsink(&p, "h264");
    let raw = appsink(&p, "raw");
    let mut id = 0;
    for (w, h) in [(640u32, 480u32), (320, 240)] {
        let mut buf = GuestBuffer::new(w, h).unwrap();
        src.push_scanout(Some(scanout_of(&buf, true)));
        for n in 0..3 {
            render(Pattern::Bars, n, &mut buf);
            src.push_draw(full(&buf), releases.release(id)).unwrap();
            id += 1;
            let au = pull(&h264);
            let b = au.buffer().unwrap();
            let keyframe = !b.flags().contains(gst::BufferFlags::DELTA_UNIT);
            let map = b.map_readable().unwrap();
            if n == 0 {
                assert!(keyframe, "{w}x{h}: first access unit must be an IDR");
                assert!(
                    has_sps(&map),
                    "{w}x{h}: first access unit must carry an SPS"
                );
            } else {
                assert!(!keyframe, "{w}x{h}: frame {n} should be a delta frame");
            }
            let decoded = pull(&raw);
            let s = decoded.caps().unwrap().structure(0).unwrap().to_owned();
            assert_eq!(
                (
                    s.get::<i32>("width").unwrap(),
                    s.get::<i32>("height").unwrap()
                ),
                (w as i32, h as i32)
            );
        }
    }
    p.set_state(gst::State::Null).unwrap();
    let counts = releases.assert_each_once(id);
    assert_eq!(counts[&DrawStatus::Released], id as usize);
}

#[test]
fn draws_that_pile_up_are_dropped_newest_wins() {
    init();
    let mut buf = GuestBuffer::new(64, 64).unwrap();
    render(Pattern::Bars, 0, &mut buf);
    // The appsink holds one buffer and is never pulled: the streaming thread blocks.
    let (p, src) = pipeline(
        "spicedmabufsrc name=src max-queued=2 ! appsink name=sink sync=false max-buffers=1 enable-last-sample=false",
    );
    start(&p);
    let releases = Releases::default();
    src.push_scanout(Some(scanout_of(&buf, true)));
    for id in 0..50 {
        src.push_draw(full(&buf), releases.release(id)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    // At most: one in the appsink, one blocked in push, two queued. The rest were dropped.
    let stats = src.property::<gst::Structure>("stats");
    assert!(stats.get::<u32>("queued").unwrap() <= 2, "{stats}");
    let dropped = releases
        .0
        .lock()
        .unwrap()
        .values()
        .filter(|v| v == &&vec![DrawStatus::Dropped])
        .count();
    assert!(dropped >= 46, "only {dropped} dropped: {stats}");
    p.set_state(gst::State::Null).unwrap();
    let counts = releases.assert_each_once(50);
    assert_eq!(counts.values().sum::<usize>(), 50);
}

#[test]
fn releases_fire_once_on_shutdown_flush_and_error() {
    init();
    let mut buf = GuestBuffer::new(64, 64).unwrap();
    render(Pattern::Bars, 0, &mut buf);

    // Flush: queued frames are dropped; frames in flight are released when freed.
    let releases = Releases::default();
    let (p, src) = pipeline(
        // async=false: flush events sent from this thread must not race a sink's asynchronous
        // state change (a GStreamer lock-order deadlock between the element's state lock and
        // the bin's async continuation), which has nothing to do with what is tested here.
        "spicedmabufsrc name=src max-queued=4 ! appsink name=sink sync=false async=false max-buffers=1 enable-last-sample=false",
    );
    start(&p);
    src.push_scanout(Some(scanout_of(&buf, true)));
    for id in 0..6 {
        src.push_draw(full(&buf), releases.release(id)).unwrap();
    }
    assert!(src.send_event(gst::event::FlushStart::new()));
    // While flushing, draws are dropped at once.
    assert!(matches!(
        src.push_draw(full(&buf), releases.release(6)),
        Err(DrawError::NotRunning(6))
    ));
    assert!(src.send_event(gst::event::FlushStop::new(true)));
    // Shutdown.
    src.push_draw(full(&buf), releases.release(7)).unwrap();
    p.set_state(gst::State::Null).unwrap();
    let counts = releases.assert_each_once(8);
    assert_eq!(counts.values().sum::<usize>(), 8);
    assert!(
        counts.get(&DrawStatus::Dropped).copied().unwrap_or(0) >= 4,
        "{counts:?}"
    );

    // Error: downstream refuses the caps (not-negotiated).
    let releases = Releases::default();
    let (p, src) = pipeline(
        "spicedmabufsrc name=src ! video/x-raw,format=I420 ! appsink name=sink sync=false enable-last-sample=false",
    );
    start(&p);
    src.push_scanout(Some(scanout_of(&buf, true)));
    for id in 0..5 {
        let _ = src.push_draw(full(&buf), releases.release(id));
        std::thread::sleep(Duration::from_millis(20));
    }
    let bus = p.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Error])
        .expect("an error message");
    if let gst::MessageView::Error(e) = msg.view() {
        assert!(
            format!("{:?}", e.debug()).contains("not-negotiated"),
            "{e:?}"
        );
    }
    p.set_state(gst::State::Null).unwrap();
    releases.assert_each_once(5);
}

#[test]
fn bad_scanouts_are_refused_and_the_element_stays_usable() {
    init();
    let (p, src) =
        pipeline("spicedmabufsrc name=src ! appsink name=sink sync=false enable-last-sample=false");
    start(&p);
    let releases = Releases::default();

    // A draw before any scanout is refused.
    let err = src
        .push_draw(
            Rect {
                x: 0,
                y: 0,
                w: 1,
                h: 1,
            },
            releases.release(0),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "draw 0: no scanout (gl_scanout missing or disabled)"
    );

    // Too small an fd.
    let small = GuestBuffer::new(64, 32).unwrap();
    let info = ScanoutInfo {
        width: 64,
        height: 64,
        fourcc: small.fourcc(),
        modifier: 0,
        y0_top: true,
        planes: vec![Plane {
            fd_index: 0,
            offset: 0,
            stride: 256,
        }],
    };
    let err = Scanout::new(info.clone(), vec![small.dup_fd().unwrap()]).unwrap_err();
    assert!(matches!(err, ScanoutError::FdTooSmall { .. }));
    assert_eq!(
        err.to_string(),
        "plane 0: fd is 8192 bytes but offset 0 + stride 256 x 64 rows needs 16384"
    );

    // Unknown fourcc.
    let mut bad = info.clone();
    bad.fourcc = u32::from_le_bytes(*b"Y8  ");
    bad.height = 32;
    let err = Scanout::new(bad, vec![small.dup_fd().unwrap()]).unwrap_err();
    assert!(
        err.to_string().contains("unknown DRM fourcc 'Y8  '"),
        "{err}"
    );

    // A rectangle outside the scanout.
    let mut buf = GuestBuffer::new(64, 64).unwrap();
    render(Pattern::Bars, 0, &mut buf);
    src.push_scanout(Some(scanout_of(&buf, true)));
    let err = src
        .push_draw(
            Rect {
                x: 60,
                y: 0,
                w: 8,
                h: 8,
            },
            releases.release(1),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("outside the 64x64 scanout"),
        "{err}"
    );

    // Still usable.
    src.push_draw(full(&buf), releases.release(2)).unwrap();
    let sample = pull(&appsink(&p, "sink"));
    drop(sample);
    flush_appsink(&src, &appsink(&p, "sink"), &src.current_scanout().unwrap());
    let counts = releases.assert_each_once(3);
    assert_eq!(counts[&DrawStatus::Refused], 2);
    assert_eq!(counts[&DrawStatus::Released], 1);
    p.set_state(gst::State::Null).unwrap();
}

#[test]
fn a_replaced_scanout_stays_open_until_released() {
    init();
    let mut a = GuestBuffer::new(64, 64).unwrap();
    render(Pattern::Solid(0x00ff0000), 0, &mut a);
    let b = GuestBuffer::new(64, 64).unwrap();
    let (p, src) =
        pipeline("spicedmabufsrc name=src ! appsink name=sink sync=false enable-last-sample=false");
    start(&p);
    let releases = Releases::default();
    let sa = scanout_of(&a, true);
    let weak = Arc::downgrade(&sa);
    src.push_scanout(Some(sa));
    src.push_draw(full(&a), releases.release(0)).unwrap();
    let sample = pull(&appsink(&p, "sink"));
    let sb = scanout_of(&b, true);
    src.push_scanout(Some(sb.clone()));
    // The old scanout (and its fd) is still alive: the sample holds its memory.
    assert!(weak.upgrade().is_some());
    let map = sample.buffer().unwrap().map_readable().unwrap();
    assert_eq!(&map[..3], &[0, 0, 255], "BGRx red read through the old fd");
    drop(map);
    drop(sample);
    flush_appsink(&src, &appsink(&p, "sink"), &sb);
    releases.assert_each_once(1);
    assert!(
        weak.upgrade().is_none(),
        "the old scanout is closed once released"
    );
    p.set_state(gst::State::Null).unwrap();
}
