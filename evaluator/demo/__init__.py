"""The demo world: the whole pipeline on tiny random-weight models, into one workdir."""
