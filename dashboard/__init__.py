"""atelier dashboard: a read-only Streamlit app over the DuckDB store (never imports torch)."""
