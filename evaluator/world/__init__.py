"""A procedural world whose truth is known: painters, their catalog and a base model trained on them."""
