-- The diffstat shown in the review inbox item, taken when checks pass.
ALTER TABLE tasks ADD COLUMN diffstat TEXT;
