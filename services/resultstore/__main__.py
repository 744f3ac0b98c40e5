import sys

from services.resultstore.main import main

raise SystemExit(main(sys.argv[1:]))
