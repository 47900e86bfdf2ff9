//! The BPE model's tables: id <-> token, the bytes each id decodes to, and the merge ranks.
//!
//! Token strings are kept in HF's byte-level form (what tokenizer.json stores) so that lookups,
//! duplicate detection and saving behave exactly as in `tokenizers`; `bytes` is what decoding emits.

use crate::bytelevel;
use crate::error::{Error, Result};
use rustc_hash::FxHashMap;

pub type Pair = (u32, u32);
/// (left, right) -> (rank, merged id).
type MergeMap = FxHashMap<Pair, (u32, u32)>;
pub const NO_ID: u32 = u32::MAX;

/// An HF "added token": matched in the raw text before pre-tokenization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedToken {
    pub id: u32,
    pub content: String,
    pub special: bool,
    pub normalized: bool,
}

#[derive(Debug, Clone)]
pub struct Vocab {
    /// id -> HF token string.
    tokens: Vec<String>,
    /// id -> decoded bytes (HF ByteLevel decoder rule).
    bytes: Vec<Vec<u8>>,
    /// Whether the id belongs to `model.vocab` (added tokens may live outside it).
    in_model: Vec<bool>,
    token_to_id: FxHashMap<String, u32>,
    /// Raw bytes of a model token -> id (used when `ignore_merges` is set).
    bytes_to_id: FxHashMap<Vec<u8>, u32>,
    /// The id of each single byte's token, or NO_ID when the vocabulary lacks it.
    byte_ids: [u32; 256],
    /// Merges in rank order, as (left id, right id).
    merges: Vec<Pair>,
    /// (left, right) -> (rank, merged id); for a pair listed twice the later rank wins, as in HF.
    merge_map: MergeMap,
    pub unk_id: Option<u32>,
    pub ignore_merges: bool,
    /// A WordLevel model: token strings are plain text and pieces are looked up whole.
    pub word_level: bool,
}

/// Lays model tokens and added tokens out by id, refusing duplicates and gaps.
fn id_table(source: &str, model_tokens: Vec<(u32, String)>, added: &[AddedToken]) -> Result<(Vec<String>, Vec<bool>)> {
    let max_id = model_tokens
        .iter()
        .map(|(id, _)| *id)
        .chain(added.iter().map(|t| t.id))
        .max();
    let size = max_id.map(|m| m as usize + 1).unwrap_or(0);
    // Ids must be dense, so the largest cannot exceed the number of entries: checked before
    // allocating, so a stray id of 4e9 is an error rather than a 100 GB allocation.
    if size > model_tokens.len() + added.len() {
        let max_id = max_id.unwrap_or(0);
        let (field, token) = match model_tokens.iter().find(|(id, _)| *id == max_id) {
            Some((_, t)) => ("model.vocab", t.clone()),
            None => ("added_tokens", added.iter().find(|t| t.id == max_id).map(|t| t.content.clone()).unwrap_or_default()),
        };
        return Err(Error::format(
            source,
            field,
            format!("id {max_id} of {token:?} leaves gaps: {} tokens cannot use ids up to {max_id} (ids must be 0..n without gaps)", model_tokens.len() + added.len()),
        ));
    }
    let mut tokens: Vec<Option<String>> = vec![None; size];
    let mut in_model = vec![false; size];
    for (id, tok) in model_tokens {
        if let Some(prev) = &tokens[id as usize] {
            return Err(Error::format(
                source,
                "model.vocab",
                format!("id {id} is given to both {prev:?} and {tok:?}"),
            ));
        }
        tokens[id as usize] = Some(tok);
        in_model[id as usize] = true;
    }
    for t in added {
        match &tokens[t.id as usize] {
            Some(existing) if *existing != t.content => {
                return Err(Error::format(
                    source,
                    "added_tokens",
                    format!("id {} is {:?} in model.vocab but {:?} in added_tokens", t.id, existing, t.content),
                ))
            }
            _ => tokens[t.id as usize] = Some(t.content.clone()),
        }
    }
    let tokens = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| {
            t.ok_or_else(|| Error::format(source, "model.vocab", format!("id {id} is missing (ids must be 0..{size} without gaps)")))
        })
        .collect::<Result<_>>()?;
    Ok((tokens, in_model))
}

/// The id of each token string (an added token wins over a model token with the same string, as in
/// HF's lookup order), the bytes each id decodes to, each model token's raw bytes, and each single
/// byte's id.
struct Lookup {
    token_to_id: FxHashMap<String, u32>,
    bytes: Vec<Vec<u8>>,
    bytes_to_id: FxHashMap<Vec<u8>, u32>,
    byte_ids: [u32; 256],
}

fn byte_level_lookup(tokens: &[String], in_model: &[bool], added: &[AddedToken]) -> Lookup {
    let mut token_to_id = FxHashMap::default();
    token_to_id.reserve(tokens.len());
    let mut bytes_to_id = FxHashMap::default();
    let mut bytes = Vec::with_capacity(tokens.len());
    let mut byte_ids = [NO_ID; 256];
    for (id, tok) in tokens.iter().enumerate() {
        let id = id as u32;
        token_to_id.entry(tok.clone()).or_insert(id);
        let raw = bytelevel::token_bytes(tok);
        if in_model[id as usize] {
            if let Some(b) = bytelevel::decode_str(tok) {
                if b.len() == 1 && byte_ids[b[0] as usize] == NO_ID {
                    byte_ids[b[0] as usize] = id;
                }
                bytes_to_id.entry(b).or_insert(id);
            }
        }
        bytes.push(raw);
    }
    for t in added {
        token_to_id.insert(t.content.clone(), t.id);
    }
    Lookup {
        token_to_id,
        bytes,
        bytes_to_id,
        byte_ids,
    }
}

fn unk_id(source: &str, token_to_id: &FxHashMap<String, u32>, unk_token: &str) -> Result<u32> {
    token_to_id
        .get(unk_token)
        .copied()
        .ok_or_else(|| Error::format(source, "model.unk_token", format!("{unk_token:?} is not in the vocabulary")))
}

/// Merges as id pairs in rank order, and (left, right) -> (rank, merged id); each merge's two
/// tokens and their concatenation must be in the vocabulary.
fn merge_tables(source: &str, merges: &[(String, String)], token_to_id: &FxHashMap<String, u32>) -> Result<(Vec<Pair>, MergeMap)> {
    let mut merge_ids = Vec::with_capacity(merges.len());
    let mut merge_map = FxHashMap::default();
    merge_map.reserve(merges.len());
    for (rank, (a, b)) in merges.iter().enumerate() {
        let field = || format!("model.merges[{rank}]");
        let ia = *token_to_id
            .get(a)
            .ok_or_else(|| Error::format(source, field(), format!("{a:?} is not in model.vocab")))?;
        let ib = *token_to_id
            .get(b)
            .ok_or_else(|| Error::format(source, field(), format!("{b:?} is not in model.vocab")))?;
        let merged = format!("{a}{b}");
        let new = *token_to_id.get(&merged).ok_or_else(|| {
            Error::format(source, field(), format!("{a:?} + {b:?} = {merged:?} is not in model.vocab"))
        })?;
        merge_ids.push((ia, ib));
        merge_map.insert((ia, ib), (rank as u32, new));
    }
    Ok((merge_ids, merge_map))
}

impl Vocab {
    /// Builds the tables from model tokens (id, HF string), extra ids for added tokens that are not in
    /// the model, and merges given as token-string pairs. `source` names the input in errors.
    pub fn new(
        source: &str,
        model_tokens: Vec<(u32, String)>,
        added: &[AddedToken],
        merges: &[(String, String)],
        unk_token: Option<&str>,
        ignore_merges: bool,
    ) -> Result<Self> {
        let (tokens, in_model) = id_table(source, model_tokens, added)?;
        let lookup = byte_level_lookup(&tokens, &in_model, added);
        let unk_id = unk_token.map(|u| unk_id(source, &lookup.token_to_id, u)).transpose()?;
        let (merges, merge_map) = merge_tables(source, merges, &lookup.token_to_id)?;
        Ok(Vocab {
            tokens,
            bytes: lookup.bytes,
            in_model,
            token_to_id: lookup.token_to_id,
            bytes_to_id: lookup.bytes_to_id,
            byte_ids: lookup.byte_ids,
            merges,
            merge_map,
            unk_id,
            ignore_merges,
            word_level: false,
        })
    }

    /// HF's `WordLevel` model: whole pieces map to ids, anything else to the unknown token.
    pub fn new_word_level(source: &str, model_tokens: Vec<(u32, String)>, added: &[AddedToken], unk_token: &str) -> Result<Self> {
        let (tokens, in_model) = id_table(source, model_tokens, added)?;
        let mut token_to_id = FxHashMap::default();
        for (id, tok) in tokens.iter().enumerate() {
            token_to_id.entry(tok.clone()).or_insert(id as u32);
        }
        for t in added {
            token_to_id.insert(t.content.clone(), t.id);
        }
        let unk_id = Some(unk_id(source, &token_to_id, unk_token)?);
        Ok(Vocab {
            bytes: tokens.iter().map(|t| t.as_bytes().to_vec()).collect(),
            tokens,
            in_model,
            token_to_id,
            bytes_to_id: FxHashMap::default(),
            byte_ids: [NO_ID; 256],
            merges: Vec::new(),
            merge_map: FxHashMap::default(),
            unk_id,
            ignore_merges: false,
            word_level: true,
        })
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    #[inline]
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.bytes.get(id as usize).map(Vec::as_slice)
    }

    pub fn id(&self, token: &str) -> Option<u32> {
        self.token_to_id.get(token).copied()
    }

    pub fn in_model(&self, id: u32) -> bool {
        self.in_model.get(id as usize).copied().unwrap_or(false)
    }

    #[inline]
    pub fn byte_id(&self, b: u8) -> u32 {
        self.byte_ids[b as usize]
    }

    #[inline]
    pub fn merge(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        self.merge_map.get(&(a, b)).copied()
    }

    pub fn merges(&self) -> &[Pair] {
        &self.merges
    }

    pub fn model_id_of_bytes(&self, b: &[u8]) -> Option<u32> {
        self.bytes_to_id.get(b).copied()
    }
}
