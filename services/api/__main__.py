import sys

from services.api.main import main

raise SystemExit(main(sys.argv[1:]))
