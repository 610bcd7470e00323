-- Capability flags of a workspace; keys absent here take the server defaults.
ALTER TABLE workspaces
  ADD COLUMN settings jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object');
