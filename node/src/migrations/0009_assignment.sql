-- A received referral can be assigned to a person of the organization, who then finds it under "mine".
ALTER TABLE inbox ADD COLUMN assigned_to TEXT NOT NULL DEFAULT '';
-- What an access-log row is about beyond its message: for `assigned`, the person assigned.
ALTER TABLE access_log ADD COLUMN detail TEXT NOT NULL DEFAULT '';
