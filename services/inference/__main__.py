import sys

from services.inference.main import main

raise SystemExit(main(sys.argv[1:]))
