# meerkat_rt.log: one-line log records on the console, with a level filter and a hook.
#
# Records look like "W ws: closed 1009 (message of 70000 bytes exceeds 16384)". Callers format
# with % and must never pass secrets (open tokens, Wi-Fi keys): log what and why, not values
# a user typed into config.json. `sink` may be replaced (the simulator and tests capture it).
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
