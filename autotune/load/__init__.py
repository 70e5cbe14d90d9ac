"""Loading and validating what the user gives: models, data, the demo, and the job they make."""
