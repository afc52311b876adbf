"""What the report shows: the tuning doctor's rules, Markdown that keeps data as text, the pages."""
