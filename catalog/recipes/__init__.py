"""Recipes: characters built from several prompt parts, in A1111 prompt syntax.

``parts`` holds the prompt model (weighted, scheduled and alternating parts),
``grammar`` reads and writes A1111 prompt syntax (a lark grammar), ``schedule`` says which
text and weights the text encoder sees at each sampling step, ``file`` reads and validates
a recipes TOML file and turns recipes into catalog entries. Nothing here imports torch.
"""
