# Launcher for the unix port: micropython run_scenario.py <scn_module> <fixtures> <boards> [args]
# or micropython run_scenario.py mem_report
# (copied next to the precompiled scenarios, so that they, not the sources, are imported).
import sys

if sys.argv[1] == "mem_report":
    import mem_report  # noqa: F401  (prints its report)
else:
    import scn_common

    scn_common.main(sys.argv)
