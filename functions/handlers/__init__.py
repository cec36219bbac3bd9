"""Lambda entry modules of the functions whose init differs from app.py's (template.yaml's
Handler lines name them); every other function's handler is app's own (`app.<name>`)."""
