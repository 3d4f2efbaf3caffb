"""Grid'5000 specifics: node catalog, OAR and Kwollect. The core never imports this package."""
