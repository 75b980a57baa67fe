"""atelier catalog: artists, prompt templates, selections and the work-unit plan."""
