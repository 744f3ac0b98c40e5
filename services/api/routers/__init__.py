"""The api service's own routes: ``health``, ``aois``, ``queries``, ``imagery``, ``uploads`` (OGC API Features
are tipg's router, mounted by ``main``)."""
