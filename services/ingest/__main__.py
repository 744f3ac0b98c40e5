import sys

from services.ingest.main import main

raise SystemExit(main(sys.argv[1:]))
