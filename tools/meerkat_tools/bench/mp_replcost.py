# The heap aiorepl takes on the MicroPython unix port (run by replcost.py): its module (from the
# .mpy that `mpremote mip install aiorepl` gives a board) and its running task (the REPL waiting
# at the prompt on standard input). Prints one JSON line.
import gc
import json

import asyncio


async def main():
    out = {}
    gc.collect()
    free0 = gc.mem_free()
    import aiorepl

    gc.collect()
    free1 = gc.mem_free()
    out["import_heap"] = free0 - free1
    task = asyncio.create_task(aiorepl.task({}))
    await asyncio.sleep_ms(200)  # it prints its banner and waits at the prompt
    gc.collect()
    out["task_heap"] = free1 - gc.mem_free()
    task.cancel()
    await asyncio.sleep_ms(10)
    print()
    print(json.dumps(out))


asyncio.run(main())
