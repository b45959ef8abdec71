// Runs mp_imports.py on the MicroPython WebAssembly port (32-bit) for meerkat-bench:
//   node wasm_imports.mjs <path of micropython.mjs> <directory to mount> <heap bytes>
// The directory (the firmware as bytecode .mpy, stubs, order.json, mp_imports.py) is copied
// into the port's in-memory file system at /bench; the script's JSON line goes to stdout.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [, , pkg, dir, heap] = process.argv;
const { loadMicroPython } = await import(pathToFileURL(pkg).href);
const mp = await loadMicroPython({
  heapsize: parseInt(heap, 10),
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});

function copy(src, dst) {
  mp.FS.mkdir(dst);
  for (const name of readdirSync(src)) {
    const s = join(src, name);
    const d = dst + "/" + name;
    if (statSync(s).isDirectory()) copy(s, d);
    else mp.FS.writeFile(d, readFileSync(s));
  }
}
copy(dir, "/bench");
mp.FS.chdir("/bench");
mp.runPython("import sys\nsys.path.insert(0, '/bench')\n");
mp.runPython(readFileSync(join(dir, "mp_imports.py"), "utf8"));
