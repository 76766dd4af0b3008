"""One router per resource: health, jobs (and their events), review, downloads, accounts."""
