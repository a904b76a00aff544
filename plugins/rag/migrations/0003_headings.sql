-- The heading path of each parent passage ("Title › Section › Subsection"): shown with
-- a result and cited in the prompt; chunks carry it at the start of their text.
ALTER TABLE parents ADD COLUMN heading TEXT NOT NULL DEFAULT '';
