"""Recipes as a stage: ``train`` runs generation, textual-inversion training and reference
import for one recipe (the recipe model itself is ``catalog.recipes``, torch-free)."""
