#!/usr/bin/python3
"""A real spice-gtk (SpiceClientGLib 2.0, 0.42) client that reports which picture it shows.

Run it with /usr/bin/python3 (the interpreter that has the `gi` module):

    upstream_client.py --host H --port P --picture K=RRGGBB,RRGGBB,... [--picture ...]
                       [--cols C --rows R] [--codec mjpeg|h264|vp8|vp9|h265 [--codec-after S]]
                       [--duration S]

Each --picture names one picture the guest may show by its solid cells, C x R of them (default
4 x 3) laid over the surface, row by row, each as the colour of its centre. The client links the
main and display channels (nothing else), and on every `display-invalidate` (spice-gtk emits it
right after it has put decoded pixels on its surface) reads the centre pixel of every cell of its
primary surface. When all cells show one picture's colours (each within a distance of 96 in
R, G, B: lossy codecs keep solid cells close) and that picture is not the one last shown in
full, it prints a line. It also counts distinct frames: 5 ms after an invalidate (so that the
invalidates of one server frame, e.g. spice-server's column strips, count once) it reads the
cells again, each as the nearest colour of the pictures' cells, and when they differ from those
it last counted, that is a new frame on the surface, whole or torn. T is `time.monotonic()` in seconds
(CLOCK_MONOTONIC, the clock of Rust's `Instant` too):

    OPEN main|display              that channel finished its link
    CODEC name                     --codec: the preferred video codec was sent to the server
                                   (as the display channel opened, or --codec-after S later)
    PRIMARY w h stride format      display-primary-create
    PIC T k n                      picture k is now on the surface in full; n invalidates so far
    COUNT T n pics frames          every second: invalidates, PIC lines and frames so far
    STATS invalidates pics frames

Only these lines go to stdout (GLib's debug output is sent to stderr).

Exit status: 0 after --duration seconds (default 3600) or on SIGTERM/SIGINT if a primary surface
came; 1 on a channel error or close (message on stderr); 2 if no primary surface came; 3 on a
bad argument.
"""

import argparse
import ctypes
import os
import signal
import sys
import time

import gi

gi.require_version("SpiceClientGLib", "2.0")
from gi.repository import GLib, GObject, SpiceClientGLib  # noqa: E402

Event = SpiceClientGLib.ChannelEvent
# SpiceVideoCodecType of spice-protocol.
CODECS = {"mjpeg": 1, "vp8": 2, "h264": 3, "vp9": 4, "h265": 5}
MAX_DISTANCE = 96
OUT = sys.stdout


def out(line):
    OUT.write(line + "\n")
    OUT.flush()


def err(line):
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def on_signal(obj, name, callback, *extra):
    # SpiceSession.connect and SpiceChannel.connect shadow GObject.Object.connect.
    return GObject.Object.connect(obj, name, callback, *extra)


def channel_name(channel):
    if isinstance(channel, SpiceClientGLib.MainChannel):
        return "main"
    if isinstance(channel, SpiceClientGLib.DisplayChannel):
        return "display"
    return type(channel).__name__


def parse_picture(text):
    key, _, cells = text.partition("=")
    colours = []
    for c in cells.split(","):
        v = int(c, 16)
        colours.append(((v >> 16) & 255, (v >> 8) & 255, v & 255))
    return key, colours


class Client:
    def __init__(self, args):
        self.args = args
        self.pictures = [parse_picture(p) for p in args.picture]
        for key, colours in self.pictures:
            if len(colours) != args.cols * args.rows:
                raise ValueError("picture %s has %d cells, not %d"
                                 % (key, len(colours), args.cols * args.rows))
        self.palette = sorted({c for _, colours in self.pictures for c in colours})
        self.loop = GLib.MainLoop()
        self.exit_code = None
        self.quitting = False
        self.channels = []
        self.primary = None
        self.points = []
        self.shown = None
        self.invalidates = 0
        self.pics = 0
        self.frames = 0
        self.last_frame = None
        self.frame_check = None

        s = SpiceClientGLib.Session()
        s.props.host = args.host
        s.props.port = str(args.port)
        on_signal(s, "channel-new", self.on_channel_new)
        self.session = s

    def run(self):
        if not SpiceClientGLib.Session.connect(self.session):
            err("cannot start the SPICE session")
            return 1
        GLib.timeout_add(int(self.args.duration * 1000), self.on_timeout)
        GLib.timeout_add(1000, self.on_count)
        for signum in (signal.SIGINT, signal.SIGTERM):
            GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, self.on_timeout)
        self.loop.run()
        return self.exit_code

    def finish(self, code):
        if self.quitting:
            return
        self.quitting = True
        self.exit_code = code
        out("STATS %d %d %d" % (self.invalidates, self.pics, self.frames))
        self.session.disconnect()
        GLib.idle_add(self.loop.quit)

    def on_timeout(self):
        if self.primary is not None:
            self.finish(0)
        else:
            err("no primary surface")
            self.finish(2)
        return GLib.SOURCE_REMOVE

    def on_count(self):
        if not self.quitting:
            out("COUNT %.6f %d %d %d"
                % (time.monotonic(), self.invalidates, self.pics, self.frames))
        return GLib.SOURCE_CONTINUE

    def on_channel_new(self, session, channel):
        name = channel_name(channel)
        if name not in ("main", "display"):
            return
        self.channels.append(channel)
        on_signal(channel, "channel-event", self.on_channel_event)
        if name == "main":
            return  # the session connects the main channel itself
        on_signal(channel, "display-primary-create", self.on_primary_create)
        on_signal(channel, "display-primary-destroy", self.on_primary_destroy)
        on_signal(channel, "display-invalidate", self.on_invalidate)
        SpiceClientGLib.Channel.connect(channel)

    def on_channel_event(self, channel, event):
        name = channel_name(channel)
        if event == Event.OPENED:
            out("OPEN " + name)
            if name == "display" and self.args.codec:
                if self.args.codec_after > 0:
                    GLib.timeout_add(int(self.args.codec_after * 1000), self.ask_codec, channel)
                else:
                    self.ask_codec(channel)
            return
        if self.quitting:
            return
        if event == Event.CLOSED:
            err("%s channel closed by the server" % name)
            self.finish(1)
        elif event in (
            Event.ERROR_CONNECT,
            Event.ERROR_TLS,
            Event.ERROR_LINK,
            Event.ERROR_AUTH,
            Event.ERROR_IO,
        ):
            gerror = channel.get_error()
            detail = (": " + gerror.message) if gerror is not None else ""
            err("%s channel error %s%s" % (name, event.value_nick, detail))
            self.finish(1)

    def ask_codec(self, channel):
        # spice_display_channel_change_preferred_video_codec_types(), which GI binds as a
        # method of DisplayChannel.
        try:
            channel.display_channel_change_preferred_video_codec_types([CODECS[self.args.codec]])
        except GLib.Error as e:
            err("cannot ask for %s: %s" % (self.args.codec, e.message))
            self.finish(1)
            return GLib.SOURCE_REMOVE
        out("CODEC " + self.args.codec)
        return GLib.SOURCE_REMOVE

    def on_primary_create(self, channel, fmt, width, height, stride, shmid, imgdata):
        # PyGObject hands the gpointer over as an int address; the surface lives until
        # display-primary-destroy.
        if not isinstance(imgdata, int) or imgdata == 0:
            err("display-primary-create without a usable pixel address (%r)" % (imgdata,))
            self.finish(1)
            return
        cols, rows = self.args.cols, self.args.rows
        cw, ch = width // cols, height // rows
        self.points = [
            imgdata + (r * ch + ch // 2) * stride + (c * cw + cw // 2) * 4
            for r in range(rows)
            for c in range(cols)
        ]
        self.primary = (width, height)
        self.shown = None
        out("PRIMARY %d %d %d %d" % (width, height, stride, fmt))

    def on_primary_destroy(self, channel):
        self.primary = None
        self.points = []

    def cells(self):
        # 32-bit pixels, B, G, R, X in memory.
        return [ctypes.string_at(a, 3) for a in self.points]

    def on_frame_check(self):
        self.frame_check = None
        if self.primary is None or self.quitting:
            return GLib.SOURCE_REMOVE
        coarse = tuple(self.nearest(px) for px in self.cells())
        if coarse != self.last_frame:
            self.last_frame = coarse
            self.frames += 1
        return GLib.SOURCE_REMOVE

    def nearest(self, px):
        """The index of the palette colour nearest to the B, G, R bytes `px`."""
        best, best_d = 0, None
        for i, (r, g, b) in enumerate(self.palette):
            d = (px[2] - r) ** 2 + (px[1] - g) ** 2 + (px[0] - b) ** 2
            if best_d is None or d < best_d:
                best, best_d = i, d
        return best

    def which(self):
        """The picture all cells show now, or None."""
        cells = self.cells()
        for key, colours in self.pictures:
            ok = True
            for px, (r, g, b) in zip(cells, colours):
                if (abs(px[2] - r) > MAX_DISTANCE or abs(px[1] - g) > MAX_DISTANCE
                        or abs(px[0] - b) > MAX_DISTANCE):
                    ok = False
                    break
            if ok:
                return key
        return None

    def on_invalidate(self, channel, x, y, w, h):
        now = time.monotonic()
        if self.primary is None or self.quitting:
            return
        self.invalidates += 1
        if self.frame_check is None:
            self.frame_check = GLib.timeout_add(5, self.on_frame_check)
        key = self.which()
        if key is not None and key != self.shown:
            self.shown = key
            self.pics += 1
            out("PIC %.6f %s %d" % (now, key, self.invalidates))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", required=True)
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--picture", action="append", required=True)
    p.add_argument("--cols", type=int, default=4)
    p.add_argument("--rows", type=int, default=3)
    p.add_argument("--codec", choices=sorted(CODECS))
    p.add_argument("--codec-after", type=float, default=0.0)
    p.add_argument("--duration", type=float, default=3600.0)
    try:
        args = p.parse_args()
    except SystemExit as e:
        sys.exit(3 if e.code else 0)
    global OUT
    OUT = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        client = Client(args)
    except ValueError as e:
        err(str(e))
        sys.exit(3)
    sys.exit(client.run())


if __name__ == "__main__":
    main()
