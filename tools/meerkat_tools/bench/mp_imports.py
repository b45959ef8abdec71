# Heap taken by importing each firmware module, in load order, on a MicroPython port: the unix
# port (64-bit) or the WebAssembly port (32-bit, like the ESP32). meerkat-bench runs it as
#
#   micropython -X heapsize=1M mp_imports.py order.json      (unix port)
#   runPython(this file) in the directory of order.json       (WebAssembly, under node)
#
# order.json: ["meerkat_rt", "meerkat_rt.compat", ...]. Each module is imported after a
# gc.collect(), with everything it imports already loaded (the order puts dependencies first),
# and costs gc.mem_alloc() after a second gc.collect() minus before: its bytecode, function and
# class objects, interned names and module-level data. gc.mem_alloc, not mem_free: the
# WebAssembly port's mem_free counts the heap it could still grow into.
# Prints one JSON line: {"port": ..., "modules": [[name, bytes or null, error or null], ...]}.
import gc
import json
import sys


def main():
    args = getattr(sys, "argv", None) or []  # the WebAssembly port has no sys.argv
    path = args[1] if len(args) > 1 else "order.json"
    with open(path) as f:
        order = json.load(f)
    rows = []
    for name in order:
        gc.collect()
        a = gc.mem_alloc()
        err = None
        try:
            __import__(name)
        except Exception as exc:  # e.g. a module that needs hardware this port lacks
            err = "%s: %s" % (type(exc).__name__, exc)
        gc.collect()
        rows.append([name, None if err else gc.mem_alloc() - a, err])
    gc.collect()
    impl = sys.implementation
    print(
        json.dumps(
            {
                "port": sys.platform,
                "version": ".".join(str(v) for v in impl.version[:3]),
                "word_bits": 64 if sys.maxsize > 2**32 else 32,
                "modules": rows,
                "heap_used_after": gc.mem_alloc(),
            }
        )
    )


main()
