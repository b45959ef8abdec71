# meerkat_rt.log: one-line log records on the console, with a level filter and a hook.
#
# Records look like "W ws: closed 1009 (message of 70000 bytes exceeds 16384)". Callers format
# with % and must never pass secrets (open tokens, Wi-Fi keys): log what and why, not values
# a user typed into config.json. Text that came from a server goes through esc() first, so that
# a newline in it cannot forge a log line. `sink` may be replaced (the simulator and tests
# capture it).
DEBUG = 0
INFO = 1
WARN = 2
ERROR = 3
_LETTERS = "DIWE"

level = INFO


def _print(line):
    print(line)


sink = _print


def log(lvl, tag, msg, *args):
    if lvl < level:
        return
    if args:
        msg = msg % args
    sink("%s %s: %s" % (_LETTERS[lvl], tag, msg))


def debug(tag, msg, *args):
    if DEBUG >= level:
        log(DEBUG, tag, msg, *args)


def info(tag, msg, *args):
    log(INFO, tag, msg, *args)


def warn(tag, msg, *args):
    log(WARN, tag, msg, *args)


def error(tag, msg, *args):
    log(ERROR, tag, msg, *args)


def esc(s, limit=160):
    """Server text made safe for one log line: valid UTF-8 (shapes.text), control characters
    and backslashes escaped (\\n, \\xNN), at most `limit` characters (the rest replaced by
    "...")."""
    from .shapes import text

    s = text(s if type(s) is str else str(s))
    cut = len(s) > limit
    if cut:
        s = s[:limit]
    for c in s:
        if c < " " or c == "\\" or c == "\x7f":
            break
    else:
        return s + "..." if cut else s
    out = []
    for c in s:
        if c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c < " " or c == "\x7f":
            out.append("\\x%02x" % ord(c))
        else:
            out.append(c)
    return "".join(out) + ("..." if cut else "")
