//! The encoders and who watches them: one pipeline per codec, started for its first subscriber
//! and stopped after its last; the codec a client gets; the current scanout and every draw,
//! fanned out to the running pipelines; rate control across a codec's subscribers; restarts of
//! failed pipelines, and the move to a codec's next pipeline file when one keeps failing.
//!
//! A display channel never touches an encoder. It asks [`Encoders::choose`] for a codec and
//! [`Encoders::subscribe`] for a [`Subscription`], which delivers access units to its callback
//! until it is dropped.
//!
//! Lock order: `Encoders::state` before an encoder's own locks. Pipelines are started and
//! stopped outside `state`, and subscriber callbacks (streaming threads) never take it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use gstspicedmabuf::{DrawRelease, Rect, Scanout};

use crate::encoder::{Encoder, KeyframeRequester, Subscriber};
use crate::ledger::DrawHandle;
use crate::log;
use crate::proto::caps::display_cap;
use crate::proto::{Caps, VideoCodec};

/// Called when a subscription's pipeline failed and was stopped; `true` when its codec was
/// given up (three failures), so the subscriber must pick another one.
pub(crate) type LostFn = Arc<dyn Fn(bool) + Send + Sync>;

/// Frames encoded per codec, and each running pipeline's bitrate (kbit/s).
pub(crate) struct Counters {
    pub encoded: Vec<(VideoCodec, u64)>,
    pub bitrates: Vec<(VideoCodec, u32)>,
}

/// Failures after which a codec's pipeline file is given up (and the codec, if it was the last).
const MAX_FAILURES: u32 = 3;

/// A codec's pipeline files as (label, text), in the order they are used: the one chosen at
/// start-up first, then the files after it in its `.d` directory.
pub(crate) type Variants = Vec<(String, String)>;

struct Sub {
    encoder: Arc<Encoder>,
    target_kbps: Option<u32>,
    on_lost: LostFn,
}

#[derive(Default)]
struct State {
    scanout: Option<Arc<Scanout>>,
    encoders: HashMap<VideoCodec, Arc<Encoder>>,
    subs: HashMap<u64, Sub>,
    /// Failures of the current pipeline file, per codec.
    failures: HashMap<VideoCodec, u32>,
    /// Index of the pipeline file in use, per codec (0 when absent).
    variant: HashMap<VideoCodec, usize>,
}

/// Every encoder pipeline of a server.
pub(crate) struct Encoders {
    /// Codecs offered (a pipeline file of theirs starts here), in preference order, with their
    /// pipeline files.
    offered: Vec<(VideoCodec, Variants)>,
    state: Mutex<State>,
    /// Frames encoded by pipelines already stopped.
    encoded_total: Mutex<HashMap<VideoCodec, u64>>,
    stopping: AtomicBool,
    /// Orientation of the current scanout (read on streaming threads).
    y0_top: AtomicBool,
    next_id: AtomicU64,
}

/// One client's subscription to one codec's pipeline; dropping it unsubscribes (and stops the
/// pipeline if nobody else uses it). Drop it outside any lock a subscriber callback takes.
pub(crate) struct Subscription {
    hub: Weak<Encoders>,
    id: u64,
    keyframes: KeyframeRequester,
    max_kbps: Option<u32>,
}

impl Subscription {
    /// Asks the pipeline for a keyframe (merged with other requests within 200 ms).
    pub fn request_keyframe(&self) {
        self.keyframes.request(false);
    }

    /// The bitrate in the pipeline text (kbit/s): rate control's ceiling.
    pub fn max_kbps(&self) -> Option<u32> {
        self.max_kbps
    }

    /// This subscriber's bitrate target; the pipeline runs at the smallest of its subscribers'.
    pub fn set_target_kbps(&self, kbps: u32) {
        if let Some(hub) = self.hub.upgrade() {
            hub.set_target(self.id, kbps);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.unsubscribe(self.id);
        }
    }
}

impl Encoders {
    pub fn new(offered: Vec<(VideoCodec, Variants)>) -> Arc<Self> {
        Arc::new(Self {
            offered,
            state: Mutex::default(),
            encoded_total: Mutex::default(),
            stopping: AtomicBool::new(false),
            y0_top: AtomicBool::new(true),
            next_id: AtomicU64::new(1),
        })
    }

    /// Codecs offered, in the server's order of preference.
    pub fn offered(&self) -> Vec<VideoCodec> {
        self.offered.iter().map(|(c, _)| *c).collect()
    }

    /// Whether the current scanout is top-down.
    pub fn y0_top(&self) -> bool {
        self.y0_top.load(Ordering::Relaxed)
    }

    /// The codec a client should use: its preference order if it sent one, else the server's;
    /// only codecs it can decode (display `caps`) and has not failed on.
    pub fn choose(
        &self,
        prefs: &[VideoCodec],
        failed: &HashSet<VideoCodec>,
        caps: &Caps,
    ) -> Option<VideoCodec> {
        let multi = caps.has(display_cap::MULTI_CODEC);
        let offered = self.offered();
        let mut order: Vec<VideoCodec> = prefs
            .iter()
            .copied()
            .filter(|c| offered.contains(c))
            .collect();
        for c in offered {
            if !order.contains(&c) {
                order.push(c);
            }
        }
        order.into_iter().find(|c| {
            !failed.contains(c)
                && match c {
                    VideoCodec::Mjpeg => !multi || caps.has(display_cap::CODEC_MJPEG),
                    other => multi && caps.has(other.client_cap()),
                }
        })
    }

    /// Subscribes to `codec`'s pipeline, starting it if needed. `on_au` gets every access unit
    /// from now on (on the streaming thread); a picture comes at once: the last scanout is drawn
    /// again, starting with a keyframe. `on_lost` runs if the pipeline fails later.
    pub fn subscribe(
        self: &Arc<Self>,
        codec: VideoCodec,
        on_au: Subscriber,
        on_lost: LostFn,
    ) -> Result<Subscription, String> {
        let existing = {
            let st = self.state.lock().unwrap();
            st.encoders.get(&codec).filter(|e| !e.failed()).cloned()
        };
        let (enc, fresh) = match existing {
            Some(e) => (e, false),
            None => (Arc::new(self.start_encoder(codec)?), true),
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sub, stale) = {
            let mut st = self.state.lock().unwrap();
            if self.stopping.load(Ordering::Acquire) {
                drop(st);
                self.retire(enc);
                return Err("shutting down".into());
            }
            // Another client may have started one meanwhile: use the running one.
            let (enc, stale, fresh) = match st.encoders.get(&codec) {
                Some(e) if !e.failed() && Arc::ptr_eq(e, &enc) => (enc, None, fresh),
                Some(e) if !e.failed() => (e.clone(), fresh.then_some(enc), false),
                _ => {
                    let old = st.encoders.insert(codec, enc.clone());
                    (enc, old, fresh)
                }
            };
            enc.push_scanout(st.scanout.clone());
            enc.subscribe(id, on_au);
            // An idle guest sends no frame: draw the last scanout again for the new client.
            if let Some(s) = &st.scanout {
                if !fresh {
                    enc.force_keyframe();
                }
                let _ = enc.push_draw(full_rect(s), DrawRelease::new(0, |_, _| {}));
            }
            let sub = Subscription {
                hub: Arc::downgrade(self),
                id,
                keyframes: enc.keyframe_requester(),
                max_kbps: enc.configured_kbps(),
            };
            st.subs.insert(
                id,
                Sub {
                    encoder: enc,
                    target_kbps: None,
                    on_lost,
                },
            );
            (sub, stale)
        };
        if let Some(old) = stale {
            self.retire(old);
        }
        Ok(sub)
    }

    fn variants(&self, codec: VideoCodec) -> Option<&Variants> {
        self.offered
            .iter()
            .find(|(c, _)| *c == codec)
            .map(|(_, v)| v)
    }

    /// Starts `codec`'s pipeline from the file in use; a file whose pipeline does not start is
    /// given up for the next one.
    fn start_encoder(&self, codec: VideoCodec) -> Result<Encoder, String> {
        let variants = self
            .variants(codec)
            .ok_or_else(|| format!("codec {codec} is not offered"))?;
        loop {
            let index = self.variant_index(codec);
            let (label, text) = &variants[index];
            match Encoder::start(codec, text) {
                Ok(enc) => return Ok(enc),
                Err(e) => {
                    let mut st = self.state.lock().unwrap();
                    match self.next_variant(&mut st, codec, index) {
                        Some(next) => log::error(&format!(
                            "the {codec} pipeline {label} does not start ({e}); switching to {next}"
                        )),
                        None => return Err(e),
                    }
                }
            }
        }
    }

    fn variant_index(&self, codec: VideoCodec) -> usize {
        let st = self.state.lock().unwrap();
        st.variant.get(&codec).copied().unwrap_or(0)
    }

    /// Moves `codec` from pipeline file `from` to the next one, if there is one; returns its
    /// label. If another thread moved on already, the file in use now is the answer.
    fn next_variant(&self, st: &mut State, codec: VideoCodec, from: usize) -> Option<String> {
        let variants = self.variants(codec)?;
        let current = st.variant.entry(codec).or_default();
        if *current == from {
            if from + 1 >= variants.len() {
                return None;
            }
            *current = from + 1;
            st.failures.remove(&codec);
        }
        Some(variants[*current].0.clone())
    }

    fn unsubscribe(&self, id: u64) {
        // The entry may hold the last reference to a pipeline that failed: it is dropped (and
        // the pipeline stopped) after the lock is released, like an idle pipeline.
        let (sub, idle) = {
            let mut st = self.state.lock().unwrap();
            let Some(sub) = st.subs.remove(&id) else {
                return;
            };
            let codec = sub.encoder.codec();
            let current = st
                .encoders
                .get(&codec)
                .is_some_and(|e| Arc::ptr_eq(e, &sub.encoder));
            let idle = if sub.encoder.unsubscribe(id) == 0 && current {
                st.encoders.remove(&codec)
            } else {
                None
            };
            (sub, idle)
        };
        drop(sub);
        if let Some(enc) = idle {
            self.retire(enc);
        }
    }

    /// Runs `id`'s codec at the smallest bitrate target among its subscribers.
    fn set_target(&self, id: u64, kbps: u32) {
        let mut st = self.state.lock().unwrap();
        let Some(sub) = st.subs.get_mut(&id) else {
            return;
        };
        sub.target_kbps = Some(kbps);
        let enc = sub.encoder.clone();
        let min = st
            .subs
            .values()
            .filter(|s| Arc::ptr_eq(&s.encoder, &enc))
            .filter_map(|s| s.target_kbps)
            .min();
        if let Some(kbps) = min {
            enc.set_bitrate_kbps(kbps);
        }
    }

    /// Replaces the scanout every pipeline draws from.
    pub fn set_scanout(&self, scanout: Option<Arc<Scanout>>) {
        let mut st = self.state.lock().unwrap();
        if let Some(s) = &scanout {
            self.y0_top.store(s.info().y0_top, Ordering::Relaxed);
        }
        for enc in st.encoders.values() {
            enc.push_scanout(scanout.clone());
        }
        st.scanout = scanout;
    }

    /// Queues a frame on every pipeline that has subscribers; each holds `handle` until it
    /// releases the frame.
    pub fn draw(&self, rect: Rect, cookie: u64, handle: &DrawHandle) {
        let st = self.state.lock().unwrap();
        for enc in st.encoders.values() {
            if enc.failed() || enc.subscribers() == 0 {
                continue;
            }
            let h = handle.clone();
            let _ = enc.push_draw(rect, DrawRelease::new(cookie, move |_, _| drop(h)));
        }
    }

    /// The pipelines that run for someone, and the current scanout.
    fn running(&self) -> (Vec<Arc<Encoder>>, Option<Arc<Scanout>>) {
        let st = self.state.lock().unwrap();
        (
            st.encoders
                .values()
                .filter(|e| !e.failed() && e.subscribers() > 0)
                .cloned()
                .collect(),
            st.scanout.clone(),
        )
    }

    /// Pushes the last frame of a burst out of idle pipelines ([`Encoder::flush_if_idle`]);
    /// called more often than [`Self::tend`], so that a lone change is not held back.
    pub fn flush_idle(&self) {
        let (running, scanout) = self.running();
        for enc in running {
            enc.flush_if_idle(scanout.as_ref());
        }
    }

    /// Periodic care (the supervisor thread): pushes the last frame of a burst out of idle
    /// pipelines, and restarts pipelines that hit an error (their frames were released when
    /// they stopped). A pipeline file that failed [`MAX_FAILURES`] times is given up for the
    /// codec's next file (its clients subscribe again, starting with a keyframe); after the
    /// last file, the codec is given up and its clients fall back to another codec.
    pub fn tend(&self) {
        let (running, scanout) = self.running();
        for enc in running {
            enc.flush_if_idle(scanout.as_ref());
            enc.rescale_bitrate();
        }
        let failed: Vec<(Arc<Encoder>, bool, Vec<LostFn>)> = {
            let mut st = self.state.lock().unwrap();
            let codecs: Vec<VideoCodec> = st
                .encoders
                .iter()
                .filter(|(_, e)| e.failed())
                .map(|(c, _)| *c)
                .collect();
            let mut out = Vec::new();
            for codec in codecs {
                let Some(enc) = st.encoders.remove(&codec) else {
                    continue;
                };
                let n = st.failures.entry(codec).or_default();
                *n += 1;
                let n = *n;
                let index = st.variant.get(&codec).copied().unwrap_or(0);
                let label = self
                    .variants(codec)
                    .and_then(|v| v.get(index))
                    .map(|(l, _)| l.clone())
                    .unwrap_or_default();
                let mut give_up = false;
                if n < MAX_FAILURES {
                    log::warn(&format!(
                        "restarting the {codec} pipeline (failure {n}, {label})"
                    ));
                } else if let Some(next) = self.next_variant(&mut st, codec, index) {
                    log::error(&format!(
                        "the {codec} pipeline failed {n} times ({label}); switching to {next}"
                    ));
                } else {
                    give_up = true;
                    log::error(&format!(
                        "the {codec} pipeline failed {n} times ({label}); its clients fall back to another codec"
                    ));
                }
                let lost = st
                    .subs
                    .values()
                    .filter(|s| Arc::ptr_eq(&s.encoder, &enc))
                    .map(|s| s.on_lost.clone())
                    .collect();
                out.push((enc, give_up, lost));
            }
            out
        };
        for (enc, give_up, lost) in failed {
            self.retire(enc);
            for f in lost {
                f(give_up);
            }
        }
    }

    /// Stops an encoder outside the state lock and counts its frames (those finished while it
    /// stopped included).
    fn retire(&self, enc: Arc<Encoder>) {
        let codec = enc.codec();
        let counter = enc.encoded_counter();
        drop(enc);
        *self.encoded_total.lock().unwrap().entry(codec).or_default() +=
            counter.load(Ordering::Relaxed);
    }

    /// Stops every pipeline; no new subscription succeeds afterwards.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let (subs, encoders): (Vec<Sub>, Vec<Arc<Encoder>>) = {
            let mut st = self.state.lock().unwrap();
            st.scanout = None;
            (
                st.subs.drain().map(|(_, s)| s).collect(),
                st.encoders.drain().map(|(_, e)| e).collect(),
            )
        };
        drop(subs);
        for e in encoders {
            self.retire(e);
        }
    }

    /// Frames encoded per codec, and each running pipeline's bitrate (kbit/s).
    pub fn counters(&self) -> Counters {
        let mut encoded = self.encoded_total.lock().unwrap().clone();
        let mut bitrates = Vec::new();
        {
            let st = self.state.lock().unwrap();
            for (c, e) in &st.encoders {
                *encoded.entry(*c).or_default() += e.encoded();
                if let Some(k) = e.current_kbps() {
                    bitrates.push((*c, k));
                }
            }
        }
        let mut encoded: Vec<_> = encoded.into_iter().collect();
        encoded.sort_by_key(|(c, _)| c.to_u8());
        bitrates.sort_by_key(|(c, _)| c.to_u8());
        Counters { encoded, bitrates }
    }
}

fn full_rect(s: &Scanout) -> Rect {
    Rect {
        x: 0,
        y: 0,
        w: s.width(),
        h: s.height(),
    }
}
