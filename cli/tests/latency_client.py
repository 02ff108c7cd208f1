#!/usr/bin/python3
"""A real spice-gtk (SpiceClientGLib 2.0, 0.42) client that reports when pictures appear.

Run it with /usr/bin/python3 (the interpreter that has the `gi` module):

    latency_client.py --host H --port P [--password PW] [--duration S]
                      [--stall-ms MS --stall-every S [--stall-after S]]

It links the main and display channels (no inputs or cursor channel) and reads its primary
surface, through the pointer spice-gtk hands out with `display-primary-create`, on every
`display-invalidate`, which spice-gtk emits right after it has put a decoded frame on the
surface. Each line on stdout (flushed at once) is one event; T is `time.monotonic()` in
seconds (CLOCK_MONOTONIC, the clock of Rust's `Instant` too):

    OPEN main|display              that channel finished its link
    PRIMARY w h stride format      display-primary-create (format 32 = 32_xRGB)
    FRAME T counter centre         the counter read from the picture changed: the counter
                                   stamp of the test guest (`Pattern::Counter` layout, see
                                   test-guest/src/counter.rs) and the luma (0..255) of the
                                   centre pixel
    FLIP T centre                  the centre pixel went from dark to light or back while the
                                   counter was unreadable or unchanged
    UNREADABLE T                   an invalidate whose counter could not be read
    STALL T ms                     --stall-ms: the main loop is blocked for that long now
    STATS invalidates frames flips unreadable

--stall-ms blocks the client's main loop (where spice-gtk reads the socket and shows frames)
for MS milliseconds every --stall-every seconds, from --stall-after seconds (default 2) after
the display channel opened: frames then reach spice-gtk late, as on a busy client.

Only these lines go to stdout: anything else written there (GLib's debug output with
SPICE_DEBUG=1, e.g. "video margin: N") is sent to stderr.

Exit status: 0 after --duration seconds (default 10) if the display channel opened and a
primary surface came; 1 on a channel error or close (message on stderr) or when stdout is
closed; 2 if no primary surface came in time; 3 on a bad argument.
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
CLIENT = None
# Our own stdout; fd 1 is pointed at stderr in main() so that GLib's debug lines (which
# GLib writes to stdout) stay out of it.
OUT = sys.stdout

# test-guest/src/counter.rs: 36 cells (white, black guards, 32 bits MSB first, black,
# white guards) of `cell` pixels, centred, `cell / 2` rows from the top.
CELLS = 36
MAX_CELL = 64
MIN_CONTRAST = 64


def out(line):
    global OUT
    try:
        OUT.write(line + "\n")
        OUT.flush()
    except BrokenPipeError:
        OUT = open(os.devnull, "w")
        if CLIENT is not None:
            CLIENT.finish(1)


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


class Surface:
    """The primary surface: 32-bit pixels, B, G, R, X in memory (32_xRGB little-endian)."""

    def __init__(self, width, height, stride, address):
        self.width = width
        self.height = height
        self.stride = stride
        self.address = address
        cell = min(width // 40, height // 20, MAX_CELL)
        self.cell = cell
        if cell <= 0:
            self.rows = []
            return
        self.x0 = (width - CELLS * cell) // 2
        inner = max(cell // 2, 1)
        self.inner = inner
        self.margin = (cell - inner) // 2
        top = cell // 2 + self.margin
        # Three rows across the central quarter of the cells are enough for a flat stamp.
        self.rows = sorted({top + inner // 4, top + inner // 2, top + (3 * inner) // 4})

    def luma_at(self, x, y):
        px = ctypes.string_at(self.address + y * self.stride + x * 4, 4)
        return (77 * px[2] + 150 * px[1] + 29 * px[0]) >> 8

    def centre(self):
        return self.luma_at(self.width // 2, self.height // 2)

    def counter(self):
        """The counter stamp, or None if a guard or a cell is unclear."""
        if not self.rows:
            return None
        cell, inner, margin = self.cell, self.inner, self.margin
        sums = [0] * CELLS
        for y in self.rows:
            row = ctypes.string_at(self.address + y * self.stride + self.x0 * 4, CELLS * cell * 4)
            for k in range(CELLS):
                a = (k * cell + margin) * 4
                seg = row[a:a + inner * 4]
                sums[k] += 77 * sum(seg[2::4]) + 150 * sum(seg[1::4]) + 29 * sum(seg[0::4])
        n = 256 * inner * len(self.rows)
        luma = [s // n for s in sums]
        white = min(luma[0], luma[-1])
        black = max(luma[1], luma[-2])
        if white < black + MIN_CONTRAST:
            return None
        mid = (white + black) // 2
        doubt = (white - black) // 4
        value = 0
        for lv in luma[2:34]:
            if lv >= mid + doubt:
                value = value << 1 | 1
            elif lv + doubt <= mid:
                value = value << 1
            else:
                return None
        return value


class Client:
    def __init__(self, args):
        self.args = args
        self.loop = GLib.MainLoop()
        self.exit_code = None
        self.quitting = False
        self.channels = []
        self.surface = None
        self.last_counter = None
        self.last_dark = None
        self.invalidates = 0
        self.frames = 0
        self.flips = 0
        self.unreadable = 0

        s = SpiceClientGLib.Session()
        s.props.host = args.host
        s.props.port = str(args.port)
        if args.password is not None:
            s.props.password = args.password
        on_signal(s, "channel-new", self.on_channel_new)
        self.session = s

    def run(self):
        if not SpiceClientGLib.Session.connect(self.session):
            err("cannot start the SPICE session")
            return 1
        GLib.timeout_add(int(self.args.duration * 1000), self.on_timeout)
        for signum in (signal.SIGINT, signal.SIGTERM):
            GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, self.on_timeout)
        self.loop.run()
        return self.exit_code

    def finish(self, code):
        if self.quitting:
            return
        self.quitting = True
        self.exit_code = code
        out("STATS %d %d %d %d" % (self.invalidates, self.frames, self.flips, self.unreadable))
        self.session.disconnect()
        GLib.idle_add(self.loop.quit)

    def on_timeout(self):
        if self.surface is not None:
            self.finish(0)
        else:
            err("no primary surface within %.1f s" % self.args.duration)
            self.finish(2)
        return GLib.SOURCE_REMOVE

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
            if name == "display" and self.args.stall_ms > 0:
                GLib.timeout_add(int(self.args.stall_after * 1000), self.on_first_stall)
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

    def on_first_stall(self):
        self.stall()
        GLib.timeout_add(int(self.args.stall_every * 1000), self.stall)
        return GLib.SOURCE_REMOVE

    def stall(self):
        if self.quitting:
            return GLib.SOURCE_REMOVE
        out("STALL %.6f %d" % (time.monotonic(), self.args.stall_ms))
        time.sleep(self.args.stall_ms / 1000.0)
        return GLib.SOURCE_CONTINUE

    def on_primary_create(self, channel, fmt, width, height, stride, shmid, imgdata):
        # PyGObject hands the gpointer over as an int address; the surface lives until
        # display-primary-destroy.
        if not isinstance(imgdata, int) or imgdata == 0:
            err("display-primary-create without a usable pixel address (%r)" % (imgdata,))
            self.finish(1)
            return
        self.surface = Surface(width, height, stride, imgdata)
        self.last_counter = None
        self.last_dark = None
        out("PRIMARY %d %d %d %d" % (width, height, stride, fmt))

    def on_primary_destroy(self, channel):
        self.surface = None

    def on_invalidate(self, channel, x, y, w, h):
        now = time.monotonic()
        s = self.surface
        if s is None or self.quitting:
            return
        self.invalidates += 1
        centre = s.centre()
        counter = s.counter()
        dark = centre < 128
        flipped = self.last_dark is not None and dark != self.last_dark
        self.last_dark = dark
        if counter is None:
            self.unreadable += 1
            out("UNREADABLE %.6f" % now)
            if flipped:
                self.flips += 1
                out("FLIP %.6f %d" % (now, centre))
            return
        if counter != self.last_counter:
            self.last_counter = counter
            self.frames += 1
            if flipped:
                self.flips += 1
            out("FRAME %.6f %d %d" % (now, counter, centre))
        elif flipped:
            self.flips += 1
            out("FLIP %.6f %d" % (now, centre))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", required=True)
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--password")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--stall-ms", type=int, default=0)
    p.add_argument("--stall-every", type=float, default=1.0)
    p.add_argument("--stall-after", type=float, default=2.0)
    try:
        args = p.parse_args()
    except SystemExit as e:
        sys.exit(3 if e.code else 0)
    if args.duration <= 0 or args.stall_every <= 0 or args.stall_ms < 0:
        err("--duration and --stall-every must be positive, --stall-ms not negative")
        sys.exit(3)
    global CLIENT, OUT
    OUT = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    CLIENT = Client(args)
    sys.exit(CLIENT.run())


if __name__ == "__main__":
    main()
