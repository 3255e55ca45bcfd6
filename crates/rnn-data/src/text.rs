//! Character-level text corpora and the two batchers of a character language model.
//!
//! ## Vocabulary
//! The vocabulary of a text is the sorted set of its distinct characters (Unicode scalar values,
//! ordered by code point); a character's index is its rank in that set. It is built from the
//! whole text, so the held-out part never meets an unknown character.
//!
//! ## Text files
//! A text is UTF-8 without NUL bytes. A byte-order mark (`EF BB BF`) at its start is not a
//! character: it is dropped when the text is read ([`text_from_bytes`]), so it never enters the
//! vocabulary. Files are read up to a size limit ([`DEFAULT_MAX_TEXT_BYTES`] unless another is
//! given, [`read_text_limited`]), checked while reading, so a FIFO that never ends or
//! `/dev/zero` is an error instead of exhausting memory.
//!
//! ## Training and validation split
//! For a text of `len` characters and a fraction `f` (default [`DEFAULT_VAL_FRAC`] = 0.1), the
//! last `⌊len·f⌋` characters are held out for validation and the first `len - ⌊len·f⌋` are the
//! training text.
//!
//! ## Batches
//! A batch is `B` sequences of `T` steps in the project's step-major layout: `inputs[t·B + b]`
//! is the index of sample `b` at step `t`, and `targets[t·B + b]` is the character that follows
//! it in the text.
//!
//! - [`StreamBatcher`] (char-rnn's): with `n = ⌊(len - 1) / (B·T)⌋·T`, stream `b` is the
//!   characters `[b·n, (b+1)·n)` and its targets are the characters one position later. Batch
//!   `j` (of `n / T` per epoch) is columns `[j·T, (j+1)·T)` of every stream, so batch `j + 1`
//!   continues batch `j`: the recurrent state is carried over, and reset at the start of each
//!   epoch ([`Batch::reset_state`]). The last `len - 1 - B·n` characters are never used.
//! - [`WindowBatcher`] (the seed tutorial's): each sample is a window of `T + 1` characters at a
//!   uniformly random start `s ∈ [0, len - T - 1]`; inputs are `[s, s + T)`, targets
//!   `[s + 1, s + T + 1)`. Windows are independent, so the state is reset every batch. An epoch
//!   is `max(1, ⌊(len - 1) / (B·T)⌋)` batches, as many targets as the text has.
//!
//! Both expose their position ([`Batcher::position`]) so that a resumed training run draws
//! exactly the batches an uninterrupted one would.

use std::path::Path;

use rnn_tensor::rng::RngState;
use rnn_tensor::Rng;

use crate::DataError;

/// The default fraction of the text held out for validation.
pub const DEFAULT_VAL_FRAC: f64 = 0.1;

/// The sorted set of distinct characters of a text, with encode and decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    chars: Vec<char>,
}

impl Vocab {
    /// The vocabulary of `text`: its distinct characters sorted by code point.
    pub fn from_text(text: &str) -> Self {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Self { chars }
    }

    /// A vocabulary from its characters (as stored in a checkpoint). They must be non-empty,
    /// sorted by code point and distinct, which is the only order [`Vocab::from_text`] produces.
    pub fn from_chars(chars: Vec<char>) -> Result<Self, DataError> {
        if chars.is_empty() {
            return Err(DataError::InvalidConfig("a vocabulary needs at least one character".into()));
        }
        if let Some(w) = chars.windows(2).find(|w| w[0] >= w[1]) {
            return Err(DataError::InvalidConfig(format!(
                "vocabulary characters must be distinct and sorted by code point, but {:?} comes before {:?}",
                w[0], w[1]
            )));
        }
        Ok(Self { chars })
    }

    /// The number of characters, `V`.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether the vocabulary is empty (only for the empty text).
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The characters in index order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The index of `c`, if it is in the vocabulary.
    pub fn index_of(&self, c: char) -> Option<usize> {
        self.chars.binary_search(&c).ok()
    }

    /// The character at `index`, if there is one.
    pub fn char_at(&self, index: usize) -> Option<char> {
        self.chars.get(index).copied()
    }

    /// The characters of `text` that are not in the vocabulary, distinct and sorted.
    pub fn unknown_chars(&self, text: &str) -> Vec<char> {
        let mut unknown: Vec<char> = text.chars().filter(|&c| self.index_of(c).is_none()).collect();
        unknown.sort_unstable();
        unknown.dedup();
        unknown
    }

    /// The indices of the characters of `text`; the error holds every character not in the
    /// vocabulary (its message lists the first ten and the count).
    pub fn encode(&self, text: &str) -> Result<Vec<usize>, DataError> {
        let mut out = Vec::with_capacity(text.len());
        for c in text.chars() {
            match self.index_of(c) {
                Some(i) => out.push(i),
                None => return Err(DataError::UnknownChars(self.unknown_chars(text))),
            }
        }
        Ok(out)
    }

    /// The text of `indices`.
    pub fn decode(&self, indices: &[usize]) -> Result<String, DataError> {
        indices
            .iter()
            .map(|&i| self.char_at(i).ok_or(DataError::BadIndex { index: i, size: self.len() }))
            .collect()
    }
}

/// The UTF-8 byte-order mark, dropped from the start of a text.
pub const BOM: &str = "\u{feff}";

/// The default size limit of a text file: 256 MiB. Training needs about 25 bytes of memory per
/// character of corpus (the text, its encoding, the batcher's copy), so this keeps a run well
/// inside a machine of a few tens of GiB; [`read_text_limited`] takes another limit.
pub const DEFAULT_MAX_TEXT_BYTES: u64 = 256 << 20;

/// Checks that `bytes` are UTF-8 text without NUL bytes (which mark a binary file, even one that
/// happens to be valid UTF-8) and returns the text without a leading byte-order mark; the error
/// names the first bad byte (its offset in `bytes`).
pub fn text_from_bytes(bytes: &[u8], origin: &str) -> Result<String, DataError> {
    match std::str::from_utf8(bytes) {
        Ok(s) => match s.bytes().position(|b| b == 0) {
            Some(offset) => Err(DataError::Binary { origin: origin.to_owned(), offset }),
            None => Ok(s.strip_prefix(BOM).unwrap_or(s).to_owned()),
        },
        Err(e) => Err(DataError::NotUtf8 { origin: origin.to_owned(), offset: e.valid_up_to() }),
    }
}

/// Reads a UTF-8 text file of at most [`DEFAULT_MAX_TEXT_BYTES`].
pub fn read_text(path: &Path) -> Result<String, DataError> {
    read_text_limited(path, DEFAULT_MAX_TEXT_BYTES)
}

/// Reads a UTF-8 text file of at most `max_bytes`, checking the size while reading (a FIFO or a
/// device need not say how large it is, and may never end).
pub fn read_text_limited(path: &Path, max_bytes: u64) -> Result<String, DataError> {
    use std::io::Read;
    let io = |e: std::io::Error| DataError::Io { path: path.to_owned(), message: e.to_string() };
    let origin = path.display().to_string();
    let too_large = || DataError::TooLarge { origin: origin.clone(), limit: max_bytes };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.is_dir() {
        return Err(io(std::io::Error::other("it is a directory")));
    }
    if meta.is_file() && meta.len() > max_bytes {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    if meta.is_file() {
        bytes.reserve_exact(meta.len() as usize);
    }
    file.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large());
    }
    text_from_bytes(&bytes, &origin)
}

/// The number of training characters of a text of `len` characters when the last
/// `⌊len·val_frac⌋` are held out.
pub fn train_len(len: usize, val_frac: f64) -> Result<usize, DataError> {
    if !(val_frac.is_finite() && (0.0..1.0).contains(&val_frac)) {
        return Err(DataError::InvalidConfig(format!(
            "the validation fraction must be in [0, 1), got {val_frac}"
        )));
    }
    let val = (len as f64 * val_frac).floor() as usize;
    Ok(len - val.min(len))
}

/// A text encoded with its vocabulary and split into training and validation parts.
#[derive(Clone, Debug, PartialEq)]
pub struct Corpus {
    vocab: Vocab,
    train: Vec<usize>,
    val: Vec<usize>,
    origin: String,
}

impl Corpus {
    /// A corpus from a string; the last `⌊len·val_frac⌋` characters are held out.
    pub fn from_text(text: &str, val_frac: f64) -> Result<Self, DataError> {
        Self::build(text, val_frac, "<string>")
    }

    /// A corpus from bytes that must be UTF-8; `origin` names them in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str, val_frac: f64) -> Result<Self, DataError> {
        let text = text_from_bytes(bytes, origin)?;
        Self::build(&text, val_frac, origin)
    }

    /// A corpus from a UTF-8 file of at most [`DEFAULT_MAX_TEXT_BYTES`].
    pub fn from_file(path: impl AsRef<Path>, val_frac: f64) -> Result<Self, DataError> {
        Self::from_file_limited(path, val_frac, DEFAULT_MAX_TEXT_BYTES)
    }

    /// A corpus from a UTF-8 file of at most `max_bytes` ([`read_text_limited`]).
    pub fn from_file_limited(
        path: impl AsRef<Path>,
        val_frac: f64,
        max_bytes: u64,
    ) -> Result<Self, DataError> {
        let path = path.as_ref();
        let text = read_text_limited(path, max_bytes)?;
        Self::build(&text, val_frac, &path.display().to_string())
    }

    fn build(text: &str, val_frac: f64, origin: &str) -> Result<Self, DataError> {
        if text.is_empty() {
            return Err(DataError::Empty(origin.to_owned()));
        }
        let vocab = Vocab::from_text(text);
        let mut all = vocab.encode(text)?;
        let split = train_len(all.len(), val_frac)?;
        let val = all.split_off(split);
        Ok(Self { vocab, train: all, val, origin: origin.to_owned() })
    }

    /// The vocabulary of the whole text.
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// The training text, encoded.
    pub fn train(&self) -> &[usize] {
        &self.train
    }

    /// The held-out validation text, encoded (empty when the fraction is 0).
    pub fn val(&self) -> &[usize] {
        &self.val
    }

    /// Where the text came from (a path or `<string>`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The total number of characters.
    pub fn len(&self) -> usize {
        self.train.len() + self.val.len()
    }

    /// Always false: an empty text is rejected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One batch in the step-major layout (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// `T·B` input indices, `inputs[t·B + b]`.
    pub inputs: Vec<usize>,
    /// `T·B` target indices, the characters following the inputs.
    pub targets: Vec<usize>,
    /// `B`.
    pub batch: usize,
    /// `T`.
    pub seq_len: usize,
    /// Whether the recurrent state must start from zero for this batch (false only when the
    /// batch continues the previous one).
    pub reset_state: bool,
    /// The epoch (from 0) this batch belongs to.
    pub epoch: u64,
}

/// Where a batcher stands: the next batch it will produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatcherPosition {
    /// The epoch, from 0.
    pub epoch: u64,
    /// The batch within the epoch, from 0.
    pub batch: u64,
    /// The random generator's state (windows only).
    pub rng: Option<RngState>,
}

/// A source of training batches that can save and restore its position.
pub trait Batcher {
    /// `"streams"` or `"windows"`.
    fn kind(&self) -> &'static str;
    /// `B`.
    fn batch_size(&self) -> usize;
    /// `T`.
    fn seq_len(&self) -> usize;
    /// Batches in one epoch.
    fn batches_per_epoch(&self) -> usize;
    /// Fills `out` with the next batch and advances.
    fn next_batch(&mut self, out: &mut Batch);
    /// The position of the next batch.
    fn position(&self) -> BatcherPosition;
    /// Continues from a position saved by [`Batcher::position`] of a batcher of the same kind
    /// over the same text.
    fn restore(&mut self, pos: &BatcherPosition) -> Result<(), DataError>;
}

fn check_sizes(batch: usize, seq_len: usize) -> Result<(), DataError> {
    if batch == 0 || seq_len == 0 {
        return Err(DataError::InvalidConfig(format!(
            "batch size and sequence length must be positive, got batch {batch}, seq_len {seq_len}"
        )));
    }
    Ok(())
}

fn check_batch_index(pos: &BatcherPosition, per_epoch: usize) -> Result<(), DataError> {
    if pos.batch >= per_epoch as u64 {
        return Err(DataError::InvalidConfig(format!(
            "saved batch position {} is past the {per_epoch} batches of an epoch; \
             resume with the same corpus, --batch and --seq-len",
            pos.batch
        )));
    }
    Ok(())
}

fn prepare(out: &mut Batch, batch: usize, seq_len: usize, reset_state: bool, epoch: u64) {
    out.inputs.resize(batch * seq_len, 0);
    out.targets.resize(batch * seq_len, 0);
    out.batch = batch;
    out.seq_len = seq_len;
    out.reset_state = reset_state;
    out.epoch = epoch;
}

/// char-rnn's batcher: `B` contiguous streams read `T` characters at a time.
#[derive(Clone, Debug)]
pub struct StreamBatcher {
    data: Vec<usize>,
    batch: usize,
    seq_len: usize,
    stream_len: usize,
    epoch: u64,
    next: usize,
}

impl StreamBatcher {
    /// Streams over `data` (the encoded training text). It must hold at least `B·T + 1`
    /// characters so that `n = ⌊(len - 1) / (B·T)⌋·T` is positive.
    pub fn new(data: &[usize], batch: usize, seq_len: usize) -> Result<Self, DataError> {
        check_sizes(batch, seq_len)?;
        let stream_len = Self::stream_len(data.len(), batch, seq_len);
        if stream_len == 0 {
            return Err(DataError::TooShort {
                what: "the training text".into(),
                have: data.len(),
                needed: batch * seq_len + 1,
                purpose: format!("one batch of {batch} streams x {seq_len} steps"),
            });
        }
        Ok(Self { data: data.to_vec(), batch, seq_len, stream_len, epoch: 0, next: 0 })
    }

    /// `n = ⌊(len - 1) / (B·T)⌋·T`, the characters per stream (0 if `len` is too short).
    pub fn stream_len(len: usize, batch: usize, seq_len: usize) -> usize {
        len.saturating_sub(1) / (batch * seq_len) * seq_len
    }
}

impl Batcher for StreamBatcher {
    fn kind(&self) -> &'static str {
        "streams"
    }
    fn batch_size(&self) -> usize {
        self.batch
    }
    fn seq_len(&self) -> usize {
        self.seq_len
    }
    fn batches_per_epoch(&self) -> usize {
        self.stream_len / self.seq_len
    }

    fn next_batch(&mut self, out: &mut Batch) {
        let (bs, sl, n) = (self.batch, self.seq_len, self.stream_len);
        prepare(out, bs, sl, self.next == 0, self.epoch);
        for t in 0..sl {
            for b in 0..bs {
                // Stream b, step j·T + t: text position b·n + j·T + t; its target is the next one.
                let pos = b * n + self.next * sl + t;
                out.inputs[t * bs + b] = self.data[pos];
                out.targets[t * bs + b] = self.data[pos + 1];
            }
        }
        self.next += 1;
        if self.next == self.batches_per_epoch() {
            self.next = 0;
            self.epoch += 1;
        }
    }

    fn position(&self) -> BatcherPosition {
        BatcherPosition { epoch: self.epoch, batch: self.next as u64, rng: None }
    }

    fn restore(&mut self, pos: &BatcherPosition) -> Result<(), DataError> {
        check_batch_index(pos, self.batches_per_epoch())?;
        if pos.rng.is_some() {
            return Err(DataError::InvalidConfig(
                "the saved position is from a windows batcher; resume with --batching windows".into(),
            ));
        }
        self.epoch = pos.epoch;
        self.next = pos.batch as usize;
        Ok(())
    }
}

/// The seed tutorial's batcher: `B` windows of `T + 1` characters at random starts.
#[derive(Clone, Debug)]
pub struct WindowBatcher {
    data: Vec<usize>,
    batch: usize,
    seq_len: usize,
    rng: Rng,
    epoch: u64,
    next: usize,
}

impl WindowBatcher {
    /// Random windows over `data`, which must hold at least `T + 1` characters; `rng` draws the
    /// starts.
    pub fn new(data: &[usize], batch: usize, seq_len: usize, rng: Rng) -> Result<Self, DataError> {
        check_sizes(batch, seq_len)?;
        if data.len() < seq_len + 1 {
            return Err(DataError::TooShort {
                what: "the training text".into(),
                have: data.len(),
                needed: seq_len + 1,
                purpose: format!("one window of {seq_len} steps plus its target"),
            });
        }
        Ok(Self { data: data.to_vec(), batch, seq_len, rng, epoch: 0, next: 0 })
    }
}

impl Batcher for WindowBatcher {
    fn kind(&self) -> &'static str {
        "windows"
    }
    fn batch_size(&self) -> usize {
        self.batch
    }
    fn seq_len(&self) -> usize {
        self.seq_len
    }
    fn batches_per_epoch(&self) -> usize {
        ((self.data.len() - 1) / (self.batch * self.seq_len)).max(1)
    }

    fn next_batch(&mut self, out: &mut Batch) {
        let (bs, sl) = (self.batch, self.seq_len);
        prepare(out, bs, sl, true, self.epoch);
        for b in 0..bs {
            // s ∈ [0, len - T - 1], so the last target s + T is inside the text.
            let s = self.rng.below(self.data.len() - sl);
            for t in 0..sl {
                out.inputs[t * bs + b] = self.data[s + t];
                out.targets[t * bs + b] = self.data[s + t + 1];
            }
        }
        self.next += 1;
        if self.next == self.batches_per_epoch() {
            self.next = 0;
            self.epoch += 1;
        }
    }

    fn position(&self) -> BatcherPosition {
        BatcherPosition { epoch: self.epoch, batch: self.next as u64, rng: Some(self.rng.state()) }
    }

    fn restore(&mut self, pos: &BatcherPosition) -> Result<(), DataError> {
        check_batch_index(pos, self.batches_per_epoch())?;
        let Some(rng) = pos.rng else {
            return Err(DataError::InvalidConfig(
                "the saved position has no random state, it is from a streams batcher; resume with --batching streams"
                    .into(),
            ));
        };
        self.rng = Rng::from_state(rng);
        self.epoch = pos.epoch;
        self.next = pos.batch as usize;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocab_is_sorted_by_code_point_and_round_trips() {
        let text = "héllo, 世界\nZa";
        let v = Vocab::from_text(text);
        assert_eq!(v.chars(), &['\n', ' ', ',', 'Z', 'a', 'h', 'l', 'o', 'é', '世', '界']);
        let ix = v.encode(text).unwrap();
        assert_eq!(ix[..3], [5, 8, 6]);
        assert_eq!(v.decode(&ix).unwrap(), text);
        assert_eq!(v.index_of('Z'), Some(3));
        assert_eq!(v.char_at(11), None);
        assert_eq!(Vocab::from_chars(v.chars().to_vec()).unwrap(), v);
    }

    #[test]
    fn unknown_characters_are_all_listed() {
        let v = Vocab::from_text("abc");
        let err = v.encode("abzx\tz").unwrap_err();
        assert_eq!(err, DataError::UnknownChars(vec!['\t', 'x', 'z']));
        let msg = err.to_string();
        assert!(msg.contains("'\\t', 'x', 'z'"), "{msg}");
        assert_eq!(v.decode(&[0, 3]).unwrap_err(), DataError::BadIndex { index: 3, size: 3 });
    }

    /// Thousands of unknown characters give one short message: the first ten and the count.
    #[test]
    fn many_unknown_characters_are_counted_not_all_listed() {
        let v = Vocab::from_text("abc");
        let text: String = (0..20_000u32).filter_map(|i| char::from_u32(0x4e00 + i)).collect();
        let msg = v.encode(&text).unwrap_err().to_string();
        assert!(msg.starts_with("20000 character(s) not in the vocabulary: '一', '丁'"), "{msg}");
        assert!(msg.contains(" and 19990 more; use only"), "{msg}");
        assert!(msg.len() < 200, "{} bytes", msg.len());
    }

    /// A byte-order mark at the start of a text is not a character; elsewhere it is one.
    #[test]
    fn a_leading_byte_order_mark_is_dropped() {
        let c = Corpus::from_bytes("\u{feff}abab".as_bytes(), "bom.txt", 0.0).unwrap();
        assert_eq!((c.len(), c.vocab().chars()), (4, &['a', 'b'][..]));
        assert_eq!(text_from_bytes("\u{feff}x\u{feff}".as_bytes(), "t").unwrap(), "x\u{feff}");
    }

    /// Files are read up to a limit, checked while reading: `/dev/zero` never ends.
    #[test]
    fn reading_stops_at_the_size_limit() {
        let dir = std::env::temp_dir().join(format!("rnn-data-limit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t.txt");
        std::fs::write(&f, "hello").unwrap();
        assert_eq!(read_text_limited(&f, 5).unwrap(), "hello");
        let e = read_text_limited(&f, 4).unwrap_err();
        assert!(matches!(e, DataError::TooLarge { limit: 4, .. }), "{e}");
        assert!(e.to_string().contains("larger than the limit of 4 bytes"), "{e}");
        let e = read_text_limited(Path::new("/dev/zero"), 1 << 20).unwrap_err().to_string();
        assert!(e.starts_with("/dev/zero is larger than the limit of 1 MiB"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_vocab_lists_are_rejected() {
        assert!(Vocab::from_chars(vec![]).is_err());
        let e = Vocab::from_chars(vec!['b', 'a']).unwrap_err().to_string();
        assert!(e.contains("'b' comes before 'a'"), "{e}");
        assert!(Vocab::from_chars(vec!['a', 'a']).is_err());
    }

    #[test]
    fn split_holds_out_the_last_fraction() {
        assert_eq!(train_len(10, 0.1).unwrap(), 9);
        assert_eq!(train_len(10, 0.25).unwrap(), 8); // ⌊2.5⌋ = 2 held out
        assert_eq!(train_len(10, 0.0).unwrap(), 10);
        assert_eq!(train_len(1_115_394, 0.1).unwrap(), 1_003_855);
        for bad in [1.0, -0.1, f64::NAN, f64::INFINITY] {
            assert!(train_len(10, bad).is_err(), "{bad}");
        }
        let c = Corpus::from_text("abcdefghij", 0.2).unwrap();
        assert_eq!(c.train(), &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(c.val(), &[8, 9]);
        assert_eq!(c.len(), 10);
        // Characters count, not bytes: 'é' is two bytes.
        let c = Corpus::from_text("éééééééééa", 0.1).unwrap();
        assert_eq!((c.train().len(), c.val(), c.vocab().len()), (9, &[0][..], 2));
    }

    #[test]
    fn bad_corpora_get_clear_errors() {
        let e = Corpus::from_bytes(b"ab\xffcd", "x.txt", 0.1).unwrap_err();
        assert_eq!(e, DataError::NotUtf8 { origin: "x.txt".into(), offset: 2 });
        assert!(e.to_string().contains("byte offset 2"), "{e}");
        // A truncated multi-byte sequence at the end.
        let e = Corpus::from_bytes("aé".as_bytes()[..2].as_ref(), "y", 0.1).unwrap_err();
        assert_eq!(e, DataError::NotUtf8 { origin: "y".into(), offset: 1 });
        assert_eq!(Corpus::from_text("", 0.1).unwrap_err(), DataError::Empty("<string>".into()));
        // Binary data that happens to be valid UTF-8 (an ELF header) is refused by its NUL bytes.
        let e = Corpus::from_bytes(b"\x7fELF\x02\x01\x01\x00\x00", "a.out", 0.1).unwrap_err();
        assert_eq!(e, DataError::Binary { origin: "a.out".into(), offset: 7 });
        assert!(e.to_string().contains("looks binary"), "{e}");
        let e = Corpus::from_file("/nonexistent/corpus.txt", 0.1).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/corpus.txt"), "{e}");
        let dir = std::env::temp_dir();
        assert!(matches!(Corpus::from_file(&dir, 0.1).unwrap_err(), DataError::Io { .. }));
        assert!(Corpus::from_text("abc", 1.5).is_err());
    }

    #[test]
    fn empty_file_is_an_empty_corpus() {
        let path = std::env::temp_dir().join(format!("rnn-data-empty-{}.txt", std::process::id()));
        std::fs::write(&path, b"").unwrap();
        let e = Corpus::from_file(&path, 0.1).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(e, DataError::Empty(_)), "{e}");
    }

    #[test]
    fn streams_follow_the_char_rnn_formula() {
        // Distinct values so every batch entry names its text position.
        let data: Vec<usize> = (0..103).collect();
        let (bs, sl) = (3, 4);
        // n = ⌊102 / 12⌋·4 = 32; 8 batches per epoch; positions 96..103 unused.
        assert_eq!(StreamBatcher::stream_len(103, bs, sl), 32);
        let mut s = StreamBatcher::new(&data, bs, sl).unwrap();
        assert_eq!(s.batches_per_epoch(), 8);
        let mut batch = Batch::default();
        for epoch in 0..2u64 {
            for j in 0..8 {
                assert_eq!(s.position(), BatcherPosition { epoch, batch: j as u64, rng: None });
                s.next_batch(&mut batch);
                assert_eq!((batch.batch, batch.seq_len, batch.epoch), (bs, sl, epoch));
                assert_eq!(batch.reset_state, j == 0);
                for t in 0..sl {
                    for b in 0..bs {
                        assert_eq!(batch.inputs[t * bs + b], b * 32 + j * sl + t);
                        assert_eq!(batch.targets[t * bs + b], b * 32 + j * sl + t + 1);
                    }
                }
            }
        }
        assert_eq!(s.position().epoch, 2);
    }

    #[test]
    fn streams_need_b_t_plus_one_characters() {
        let data = vec![0usize; 13];
        assert!(StreamBatcher::new(&data, 3, 4).is_ok());
        let e = StreamBatcher::new(&data[..12], 3, 4).unwrap_err();
        assert_eq!(
            e,
            DataError::TooShort {
                what: "the training text".into(),
                have: 12,
                needed: 13,
                purpose: "one batch of 3 streams x 4 steps".into()
            }
        );
        assert!(e.to_string().contains("12 characters, but 13"), "{e}");
        assert!(StreamBatcher::new(&data, 0, 4).is_err());
        assert!(StreamBatcher::new(&data, 3, 0).is_err());
    }

    #[test]
    fn windows_are_contiguous_seeded_and_in_range() {
        let data: Vec<usize> = (0..40).collect();
        let (bs, sl) = (5, 6);
        let mut w = WindowBatcher::new(&data, bs, sl, Rng::seed_from(3)).unwrap();
        assert_eq!(w.batches_per_epoch(), 1); // ⌊39 / 30⌋ = 1
        let mut batch = Batch::default();
        let mut starts = std::collections::BTreeSet::new();
        for _ in 0..50 {
            w.next_batch(&mut batch);
            assert!(batch.reset_state);
            for b in 0..bs {
                let s = batch.inputs[b];
                starts.insert(s);
                assert!(s + sl < data.len());
                for t in 0..sl {
                    assert_eq!(batch.inputs[t * bs + b], s + t);
                    assert_eq!(batch.targets[t * bs + b], s + t + 1);
                }
            }
        }
        // Every start in [0, 33] is reachable, and only those.
        assert_eq!(starts, (0..=33).collect());
        assert_eq!(w.position().epoch, 50);
        let mut a = WindowBatcher::new(&data, bs, sl, Rng::seed_from(9)).unwrap();
        let mut b = WindowBatcher::new(&data, bs, sl, Rng::seed_from(9)).unwrap();
        let (mut x, mut y) = (Batch::default(), Batch::default());
        a.next_batch(&mut x);
        b.next_batch(&mut y);
        assert_eq!(x, y);
        let e = WindowBatcher::new(&data[..6], 1, 6, Rng::seed_from(0)).unwrap_err();
        assert!(e.to_string().contains("6 characters, but 7"), "{e}");
        assert!(WindowBatcher::new(&data[..7], 1, 6, Rng::seed_from(0)).is_ok());
    }

    fn resume_matches<B: Batcher + Clone>(mut full: B, mut fresh: B, cut: usize, total: usize) {
        let mut batch = Batch::default();
        let mut expected = Vec::new();
        let mut saved = None;
        for i in 0..total {
            if i == cut {
                saved = Some(full.position());
            }
            full.next_batch(&mut batch);
            expected.push(batch.clone());
        }
        fresh.restore(&saved.unwrap()).unwrap();
        for want in &expected[cut..] {
            fresh.next_batch(&mut batch);
            assert_eq!(&batch, want);
        }
    }

    #[test]
    fn a_restored_position_continues_identically() {
        let data: Vec<usize> = (0..200).map(|i| (i * 7) % 13).collect();
        let s = StreamBatcher::new(&data, 4, 5).unwrap();
        resume_matches(s.clone(), s.clone(), 13, 30);
        let w = WindowBatcher::new(&data, 4, 5, Rng::seed_from(1)).unwrap();
        let other = WindowBatcher::new(&data, 4, 5, Rng::seed_from(2)).unwrap();
        resume_matches(w.clone(), other.clone(), 17, 30);
        // Mixed kinds and impossible positions are refused.
        let mut s2 = s.clone();
        assert!(s2.restore(&w.position()).is_err());
        let mut w2 = w.clone();
        assert!(w2.restore(&s.position()).is_err());
        let past = BatcherPosition { epoch: 0, batch: 9, rng: None };
        assert!(s2.restore(&past).unwrap_err().to_string().contains("past the 9 batches"));
    }
}
