-- Every row's day and 32-day period as tokens of `tags` (`d<day since 1970, UTC>`,
-- `c<day / 32>`), as the write path now adds them: a search filtered by date matches
-- the days (or periods) of its range in the index, instead of reading the time of
-- every newer row that holds its words. Integer division here and in the write path
-- agree on each row's day.
UPDATE search_index
SET tags = tags || ' d' || (created_at / 86400000) || ' c' || (created_at / 86400000 / 32);

-- The words of `title` and `body`, so that a search's last word, a prefix, is matched as
-- the few whole words it starts: FTS5 matches a prefix longer than its prefix index by
-- merging every such word's rows over the whole table first. The write path adds the
-- words of each row it indexes, and `search_word_stems` the starts of words it cannot
-- spell as the tokenizer does (see `vocabulary` in the store); here the tokenizer's own
-- words are read from the index. Words of up to 3 characters are left out: a prefix of
-- up to 3 has its own index and is never expanded.
CREATE TABLE search_words (word TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE search_word_stems (stem TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE VIRTUAL TABLE temp.search_vocab USING fts5vocab(main, search_index, 'col');
INSERT INTO search_words (word)
SELECT DISTINCT term FROM temp.search_vocab
WHERE col IN ('title', 'body') AND length(term) > 3;
DROP TABLE temp.search_vocab;
