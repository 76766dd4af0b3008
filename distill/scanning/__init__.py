"""Text scanning below every stage: regex pattern files (`safety/patterns/`) and the credential detector
they drive, shared by the review's checks and by the API-key checks on specs and error messages."""
