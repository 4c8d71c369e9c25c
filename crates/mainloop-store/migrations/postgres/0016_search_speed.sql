-- A search takes the newest rows holding its words. PostgreSQL either walks the user's
-- rows newest first and tests each (cheap when the words are common: rows sit in the
-- table in about the order they were written), or collects every row holding the words
-- through the word index and sorts them (cheap when they are rare: each is a random
-- read). It chooses by how many rows it expects the words to match, from the words'
-- frequencies in its statistics; by default those keep about 1,000 words, so a word
-- outside them (and a prefix of such words) is assumed to be very rare, and a search for
-- a common word with a less common prefix read tens of thousands of rows at random.
-- Ten times the words make those guesses close.
ALTER TABLE search_index ALTER COLUMN tsv SET STATISTICS 1000;

-- A search limited to some kinds (messages only, say) walks that kind's rows of the
-- user newest first instead of every row of the user.
CREATE INDEX search_index_user_kind ON search_index (user_id, kind, created_at);

ANALYZE search_index;
