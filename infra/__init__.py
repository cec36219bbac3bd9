"""Infrastructure helpers (CloudFormation template loading)."""
