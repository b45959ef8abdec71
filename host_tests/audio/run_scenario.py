# Launcher for the unix port: micropython run_scenario.py <scn_module> <fixtures> <boards> [args]
# (copied next to the precompiled scenarios, so that they, not the sources, are imported).
import sys

import scn_common

scn_common.main(sys.argv)
