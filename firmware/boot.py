# boot.py: runs first after every reset and must return quickly. Kept minimal on purpose: the
# application starts from main.py, so a crash there never stops the board from reaching the REPL.
import micropython

micropython.alloc_emergency_exception_buf(100)  # so an IRQ-context exception can be reported
