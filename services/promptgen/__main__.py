import sys

from services.promptgen.main import main

raise SystemExit(main(sys.argv[1:]))
