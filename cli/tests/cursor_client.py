#!/usr/bin/python3
"""A real spice-gtk (SpiceClientGLib 2.0, 0.42) client that reports cursor-channel events.

Run it with /usr/bin/python3 (the interpreter that has the `gi` module):

    cursor_client.py --host H --port P [--password PW] [--duration S]
                     [--move-to X Y] [--mode client|server]

It links the main channel, then the cursor and inputs channels the server lists (not the
display channel), and prints one line per event on stdout, flushed at once:

    MOUSE_MODE n                   main channel `mouse-mode` changed (1 server, 2 client)
    OPEN main|cursor|inputs        that channel finished its link
    SET w h hot_x hot_y SHA R G B A
                                   cursor-set: SHA is the sha256 (hex) of the w*h*4 RGBA bytes
                                   spice-gtk hands out, R G B A the first pixel (decimal)
    SET w h hot_x hot_y none       cursor-set for a cursor type spice-gtk cannot decode
    MOVE x y                       cursor-move
    HIDE                           cursor-hide
    RESET                          cursor-reset
    SENT POSITION x y              --move-to in client mode: MOUSE_POSITION(x, y, display 0)
    SENT MOTION dx dy              --move-to in server mode: MOUSE_MOTION(dx, dy)

--mode asks the server for that mouse mode (MOUSE_MODE_REQUEST, after the first MOUSE_MODE)
and decides how --move-to is sent. Without --mode, --move-to follows the current mouse mode.
The move is sent once: when the inputs channel is open and the mouse mode is the one wanted,
or 2 s after the inputs channel opened if the server never switched.

spice-gtk delivers cursor pixels as R, G, B, A bytes (channel-cursor.c swaps bytes 0 and 2 of
the wire's B, G, R, A ALPHA pixels), straight alpha, for GdkPixbuf.

Exit status: 0 after --duration seconds (default 10) if the cursor channel opened; 1 on a
channel error or close (message on stderr) or when stdout is closed; 2 if no cursor channel
opened in time; 3 on a bad argument. spice-gtk's own warnings and criticals (e.g.
"cursor_handle_set: assertion 'c->init_done == TRUE' failed") go to stderr too.
"""

import argparse
import ctypes
import hashlib
import os
import signal
import sys

import gi

gi.require_version("SpiceClientGLib", "2.0")
from gi.repository import GLib, GObject, SpiceClientGLib  # noqa: E402

Event = SpiceClientGLib.ChannelEvent
CLIENT = None  # the running Client, for out()
MODE_SERVER = 1
MODE_CLIENT = 2
MODES = {"server": MODE_SERVER, "client": MODE_CLIENT}


def out(line):
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away: stop writing and end the run quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
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
    if isinstance(channel, SpiceClientGLib.CursorChannel):
        return "cursor"
    if isinstance(channel, SpiceClientGLib.InputsChannel):
        return "inputs"
    return type(channel).__name__


class Client:
    def __init__(self, args):
        self.args = args
        self.loop = GLib.MainLoop()
        self.exit_code = None
        self.quitting = False
        self.main = None
        self.inputs = None
        self.inputs_opened = False
        self.cursor_opened = False
        self.mouse_mode = 0
        self.mode_requested = False
        self.move_pending = args.move_to is not None
        self.move_grace_over = False
        self.channels = []  # keep Python references alive

        s = SpiceClientGLib.Session()
        s.props.host = args.host
        s.props.port = str(args.port)
        if args.password is not None:
            s.props.password = args.password
        on_signal(s, "channel-new", self.on_channel_new)
        self.session = s

    # --- lifecycle -------------------------------------------------------------------------

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
        self.session.disconnect()
        # Let the disconnect run one iteration, then stop.
        GLib.idle_add(self.loop.quit)

    def on_timeout(self):
        if self.cursor_opened:
            self.finish(0)
        else:
            err("no cursor channel was opened within %.1f s" % self.args.duration)
            self.finish(2)
        return GLib.SOURCE_REMOVE

    # --- channels --------------------------------------------------------------------------

    def on_channel_new(self, session, channel):
        name = channel_name(channel)
        if name not in ("main", "cursor", "inputs"):
            return
        self.channels.append(channel)
        on_signal(channel, "channel-event", self.on_channel_event)
        if name == "main":
            self.main = channel
            on_signal(channel, "notify::mouse-mode", self.on_mouse_mode)
            return  # the session connects the main channel itself
        if name == "cursor":
            on_signal(channel, "cursor-set", self.on_cursor_set)
            on_signal(channel, "cursor-move", lambda ch, x, y: out("MOVE %d %d" % (x, y)))
            on_signal(channel, "cursor-hide", lambda ch: out("HIDE"))
            on_signal(channel, "cursor-reset", lambda ch: out("RESET"))
        if name == "inputs":
            self.inputs = channel
        SpiceClientGLib.Channel.connect(channel)

    def on_channel_event(self, channel, event):
        name = channel_name(channel)
        if event == Event.OPENED:
            out("OPEN " + name)
            if name == "cursor":
                self.cursor_opened = True
            elif name == "inputs":
                self.inputs_opened = True
                if self.move_pending:
                    GLib.timeout_add(2000, self.on_move_grace)
                    self.try_move()
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

    # --- main channel ----------------------------------------------------------------------

    def on_mouse_mode(self, channel, _pspec):
        mode = channel.props.mouse_mode
        if mode == self.mouse_mode:
            return
        self.mouse_mode = mode
        out("MOUSE_MODE %d" % mode)
        wanted = MODES.get(self.args.mode)
        if wanted is not None and mode != wanted and not self.mode_requested:
            self.mode_requested = True
            channel.request_mouse_mode(wanted)
        self.try_move()

    # --- cursor channel --------------------------------------------------------------------

    def on_cursor_set(self, channel, width, height, hot_x, hot_y, rgba):
        # PyGObject hands the signal's gpointer over as an int address (None or 0 for
        # NULL, which spice-gtk sends for a cursor type it cannot decode). It is valid
        # for the duration of the emission.
        size = width * height * 4
        if rgba is None or rgba == 0 or size <= 0:
            data = None
        elif isinstance(rgba, int):
            data = ctypes.string_at(rgba, size)
        else:
            # Unexpected binding: use the `cursor` property (SpiceCursorShape, since 0.34),
            # a copy whose `data` field also comes through GI as an address.
            shape = channel.props.cursor
            data = None
            if shape is not None and shape.data:
                data = ctypes.string_at(shape.data, shape.width * shape.height * 4)
        if data is None:
            out("SET %d %d %d %d none" % (width, height, hot_x, hot_y))
            return
        digest = hashlib.sha256(data).hexdigest()
        first = tuple(data[:4]) if len(data) >= 4 else (0, 0, 0, 0)
        out("SET %d %d %d %d %s %d %d %d %d" % ((width, height, hot_x, hot_y, digest) + first))

    # --- inputs channel --------------------------------------------------------------------

    def on_move_grace(self):
        self.move_grace_over = True
        self.try_move()
        return GLib.SOURCE_REMOVE

    def try_move(self):
        if not self.move_pending or self.inputs is None or self.quitting:
            return
        wanted = MODES.get(self.args.mode)
        if wanted is None:
            mode = self.mouse_mode
            if mode not in (MODE_SERVER, MODE_CLIENT):
                return  # wait for the first MOUSE_MODE
        elif self.mouse_mode == wanted or self.move_grace_over:
            mode = wanted
        else:
            return
        if not self.inputs_opened:
            return
        self.move_pending = False
        x, y = self.args.move_to
        if mode == MODE_CLIENT:
            self.inputs.position(x, y, 0, 0)
            out("SENT POSITION %d %d" % (x, y))
        else:
            self.inputs.motion(x, y, 0)
            out("SENT MOTION %d %d" % (x, y))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", required=True)
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--password")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--move-to", nargs=2, type=int, metavar=("X", "Y"))
    p.add_argument("--mode", choices=sorted(MODES))
    try:
        args = p.parse_args()
    except SystemExit as e:
        sys.exit(3 if e.code else 0)
    if args.duration <= 0:
        err("--duration must be positive")
        sys.exit(3)
    global CLIENT
    CLIENT = Client(args)
    sys.exit(CLIENT.run())


if __name__ == "__main__":
    main()
