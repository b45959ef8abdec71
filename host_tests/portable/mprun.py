# Runs the test_* functions of one portable test module and prints one JSON line per test.
#
#   micropython -X heapsize=110K host_tests/portable/mprun.py t_protocol [test_name ...]
#
# The same modules run under CPython through pytest (host_tests/test_portable.py); this runner
# is how pytest drives them on the MicroPython unix port. Exit status 1 if any test failed.
import gc
import json
import sys


def _error_text(exc):
    try:
        import io

        buf = io.StringIO()
        sys.print_exception(exc, buf)  # type: ignore[attr-defined]
        return buf.getvalue()
    except AttributeError:  # CPython
        import traceback

        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def main(argv):
    name = argv[1]
    wanted = argv[2:]
    module = __import__(name)
    names = [n for n in dir(module) if n.startswith("test_") and (not wanted or n in wanted)]
    names.sort()
    failed = 0
    for test_name in names:
        gc.collect()
        try:
            getattr(module, test_name)()
            result = {"test": test_name, "ok": True}
        except Exception as exc:  # report every failure, keep running the others
            failed += 1
            result = {"test": test_name, "ok": False, "error": _error_text(exc)}
        try:
            result["mem_free"] = gc.mem_free()  # type: ignore[attr-defined]
        except AttributeError:
            pass
        print(json.dumps(result))
    print(json.dumps({"summary": name, "tests": len(names), "failed": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
