#!/usr/bin/python3
"""Prints the X server's current pointer image (XFixesGetCursorImage) for tests.

Output, one line: "<width> <height> <xhot> <yhot> <pixels>", pixels as 8-digit hex ARGB words
(premultiplied, as XFixes gives them) separated by commas. DISPLAY selects the server.
Exit code 1 if the display cannot be opened or has no XFixes.
"""
import ctypes
import sys


class XFixesCursorImage(ctypes.Structure):
    _fields_ = [
        ("x", ctypes.c_short),
        ("y", ctypes.c_short),
        ("width", ctypes.c_ushort),
        ("height", ctypes.c_ushort),
        ("xhot", ctypes.c_ushort),
        ("yhot", ctypes.c_ushort),
        ("cursor_serial", ctypes.c_ulong),
        ("pixels", ctypes.POINTER(ctypes.c_ulong)),
        ("atom", ctypes.c_ulong),
        ("name", ctypes.c_char_p),
    ]


def main():
    x11 = ctypes.CDLL("libX11.so.6")
    xfixes = ctypes.CDLL("libXfixes.so.3")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XFree.argtypes = [ctypes.c_void_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    xfixes.XFixesQueryExtension.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_int),
        ctypes.POINTER(ctypes.c_int),
    ]
    xfixes.XFixesGetCursorImage.restype = ctypes.POINTER(XFixesCursorImage)
    xfixes.XFixesGetCursorImage.argtypes = [ctypes.c_void_p]

    dpy = x11.XOpenDisplay(None)
    if not dpy:
        print("cannot open the display", file=sys.stderr)
        return 1
    ev, err = ctypes.c_int(), ctypes.c_int()
    if not xfixes.XFixesQueryExtension(dpy, ctypes.byref(ev), ctypes.byref(err)):
        print("no XFixes extension", file=sys.stderr)
        return 1
    img = xfixes.XFixesGetCursorImage(dpy)
    if not img:
        print("XFixesGetCursorImage failed", file=sys.stderr)
        return 1
    c = img.contents
    n = c.width * c.height
    pixels = ",".join("%08x" % (c.pixels[i] & 0xFFFFFFFF) for i in range(n))
    print("%d %d %d %d %s" % (c.width, c.height, c.xhot, c.yhot, pixels), flush=True)
    x11.XFree(img)
    x11.XCloseDisplay(dpy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
