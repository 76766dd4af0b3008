"""Teacher and judge providers behind one small Protocol (see `protocol.py`)."""
