"""The learned temporal-attention fusion of face, voice and words (see `net.py`)."""
