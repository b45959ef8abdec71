# main.py: start the voice client from config.json (see config.example.json and the README).
# Press Ctrl-C in the REPL to stop it; `import meerkat_rt; meerkat_rt.run()` starts it again.
import meerkat_rt

meerkat_rt.run()
