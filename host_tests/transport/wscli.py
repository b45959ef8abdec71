# Runs one transport scenario and prints its result as a JSON line prefixed with "RESULT ".
#
#   MICROPYPATH=<scenarios .mpy>:host_tests/transport:<firmware .mpy>:.frozen \
#     micropython -X heapsize=110K host_tests/transport/wscli.py sc_ws echo '{"url": "ws://..."}'
#
# Scenarios are async functions taking one dict of arguments and returning a JSON-able dict;
# the same functions run in-process under CPython (host_tests/transport/conftest.py).
# An argument "@path" names a file holding the JSON instead: the unix-port wheel aborts with
# "FATAL: uncaught NLR" on any command-line argument of 256 characters or more.
import asyncio
import json
import sys


def main(argv):
    module = __import__(argv[1])
    text = argv[3]
    if text.startswith("@"):
        with open(text[1:]) as f:
            text = f.read()
    args = json.loads(text)
    try:
        result = asyncio.run(getattr(module, argv[2])(args))
    except Exception as exc:  # report, do not crash: the test prints it
        sys.print_exception(exc)  # type: ignore[attr-defined]
        result = {"exception": "%s: %s" % (type(exc).__name__, exc)}
    print("RESULT " + json.dumps(result))


main(sys.argv)
