-- What git declared for a resource when an override took it over, as a state-file entry
-- (JSON): `export` writes it instead of the overridden value, so that committing an export
-- keeps git's intent. Empty when git declared nothing for it.
ALTER TABLE overrides ADD COLUMN git_value TEXT;
