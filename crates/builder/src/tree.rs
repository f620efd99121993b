//! The merged filesystem tree, built from the top layer down.
//!
//! Layers are numbered 1 (bottom) to n (top) and fed from n down to 1. An
//! entry of layer k is *visible* unless something above it shadows it: an
//! entry at the same path from a higher layer (directories merge), a
//! whiteout or opaque marker from a higher layer, or a non-directory higher
//! up its path. Because upper layers come first, the builder knows whether
//! an entry is visible before it reads its data, so shadowed and deleted
//! files are never chunked or shipped.
//!
//! Hardlinks need care: a link's target may be a file that is itself
//! shadowed, in the same layer (then the layer is read a second time for
//! just those members, see [`MergeTree::end_layer`]) or in a lower layer
//! (then the link waits until that layer is read).

use std::collections::{BTreeMap, HashMap};

use skiff_format::InodeKind;

use crate::error::{BuildError, Result};
use crate::layer::{display_path, EntryKind, EntryMeta, LayerEntry};

pub type NodeId = u32;
pub type InodeId = u32;

const ROOT: NodeId = 0;

/// Where a range of a file's bytes will live, before chunk indices exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingRef {
    pub file_offset: u64,
    /// The chunking unit holding the bytes; `None` for a hole.
    pub unit: Option<u32>,
    pub unit_offset: u32,
    pub length: u32,
}

/// A regular file's references; most files have one, kept inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRefs {
    One(PendingRef),
    Many(Vec<PendingRef>),
}

impl FileRefs {
    pub fn from_vec(mut v: Vec<PendingRef>) -> Self {
        if v.len() == 1 {
            FileRefs::One(v.pop().expect("one element"))
        } else {
            FileRefs::Many(v)
        }
    }

    pub fn as_slice(&self) -> &[PendingRef] {
        match self {
            FileRefs::One(r) => std::slice::from_ref(r),
            FileRefs::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    None,
    Symlink(Vec<u8>),
    File(FileRefs),
    /// A placeholder waiting for a hardlink target.
    Unfilled,
}

#[derive(Debug, Clone)]
pub struct Inode {
    pub kind: InodeKind,
    pub meta: EntryMeta,
    pub size: u64,
    pub content: Content,
    /// Set when this placeholder turned out to be another inode.
    alias: Option<InodeId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Exists only to carry whiteout or opaque marks.
    Absent,
    /// A directory some layer needs but none has described yet.
    Implicit,
    Present(InodeId),
}

#[derive(Debug)]
struct Node {
    children: BTreeMap<Vec<u8>, NodeId>,
    state: State,
    /// The highest layer that created this node.
    layer: u16,
    /// Entries at this path from layers below this are deleted (whiteout).
    hide_below: u16,
    /// Children from layers below this are hidden (opaque directory).
    opaque_below: u16,
}

/// What the caller must do after [`MergeTree::add_entry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing: metadata only, or the entry is shadowed.
    Done,
    /// Read this regular file's data and store it with [`MergeTree::set_file`].
    Capture(InodeId),
}

/// How far along a layer a path was recorded, for hardlinks within it.
#[derive(Debug, Clone)]
enum LayerSlot {
    Inode(InodeId),
    /// The member was shadowed and its data skipped; its index allows a re-read.
    Skipped(u64),
    /// A hardlink that was not materialised: resolve its target instead.
    Alias(PathKey),
}

struct Waiter {
    layer: u16,
    inode: InodeId,
    link_path: String,
    target_path: String,
}

enum Walk {
    Hidden,
    /// An ancestor is a non-directory from the same layer.
    BelowNonDir(String),
    /// The path is open to this layer; `node` is set if it already exists.
    Found {
        node: Option<NodeId>,
    },
}

enum Placement {
    /// Create the path, or fill a node that only carried marks.
    Create,
    Replace(NodeId),
    UpdateMeta(InodeId),
}

pub struct MergeTree {
    nodes: Vec<Node>,
    inodes: Vec<Inode>,
    layer: u16,
    layer_name: String,
    layer_paths: HashMap<PathKey, LayerSlot, KeyHasher>,
    waiters: HashMap<PathKey, Vec<Waiter>, KeyHasher>,
    refetch: Vec<(u64, InodeId)>,
}

/// A path, hashed to 128 bits. Per-layer indexes hold one per entry; full
/// paths would cost more memory than the rest of the tree. Accidental
/// collisions are negligible and deliberate ones need ~2^64 work.
type PathKey = u128;

fn key(path: &[Vec<u8>]) -> PathKey {
    let mut h = blake3::Hasher::new();
    for (i, comp) in path.iter().enumerate() {
        if i > 0 {
            h.update(b"/");
        }
        h.update(comp);
    }
    u128::from_le_bytes(h.finalize().as_bytes()[..16].try_into().expect("16 bytes"))
}

/// `PathKey`s are already uniform: hash them by taking their low bits.
#[derive(Default)]
struct KeyHash(u64);

impl std::hash::Hasher for KeyHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

type KeyHasher = std::hash::BuildHasherDefault<KeyHash>;

fn kind_of(k: &EntryKind) -> InodeKind {
    match k {
        EntryKind::File => InodeKind::File,
        EntryKind::Directory | EntryKind::Opaque => InodeKind::Directory,
        EntryKind::Symlink(_) => InodeKind::Symlink,
        EntryKind::CharDevice => InodeKind::CharDevice,
        EntryKind::BlockDevice => InodeKind::BlockDevice,
        EntryKind::Fifo | EntryKind::Whiteout | EntryKind::HardLink(_) => InodeKind::Fifo,
    }
}

impl Default for MergeTree {
    fn default() -> Self {
        Self::new()
    }
}

impl MergeTree {
    pub fn new() -> Self {
        Self {
            nodes: vec![Node {
                children: BTreeMap::new(),
                state: State::Implicit,
                layer: u16::MAX,
                hide_below: 0,
                opaque_below: 0,
            }],
            inodes: Vec::new(),
            layer: u16::MAX,
            layer_name: String::new(),
            layer_paths: HashMap::default(),
            waiters: HashMap::default(),
            refetch: Vec::new(),
        }
    }

    /// Starts layer `k` (1 = bottom). Layers must come in descending order.
    pub fn begin_layer(&mut self, k: u16, name: &str) {
        assert!(k >= 1 && k < self.layer, "layers go top down");
        self.layer = k;
        self.layer_name = name.to_string();
        self.layer_paths.clear();
        self.refetch.clear();
    }

    fn hostile(&self, path: &[Vec<u8>], reason: impl Into<String>) -> BuildError {
        BuildError::HostileLayer {
            layer: self.layer_name.clone(),
            path: display_path(path),
            reason: reason.into(),
        }
    }

    pub fn inode(&self, id: InodeId) -> &Inode {
        &self.inodes[id as usize]
    }

    fn resolve(&self, mut id: InodeId) -> InodeId {
        // Alias chains are acyclic: an alias always points at an older inode
        // or at one created after every link that waits on it.
        let mut hops = 0;
        while let Some(next) = self.inodes[id as usize].alias {
            id = next;
            hops += 1;
            if hops > self.inodes.len() {
                break;
            }
        }
        id
    }

    fn new_inode(&mut self, e: &LayerEntry) -> InodeId {
        let content = match &e.kind {
            EntryKind::Symlink(t) => Content::Symlink(t.clone()),
            EntryKind::File => Content::File(FileRefs::Many(Vec::new())),
            _ => Content::None,
        };
        let size = match &e.kind {
            EntryKind::Symlink(t) => t.len() as u64,
            EntryKind::File => e.size,
            _ => 0,
        };
        self.inodes.push(Inode {
            kind: kind_of(&e.kind),
            meta: e.meta.clone(),
            size,
            content,
            alias: None,
        });
        self.inodes.len() as InodeId - 1
    }

    fn placeholder(&mut self) -> InodeId {
        self.inodes.push(Inode {
            kind: InodeKind::File,
            meta: EntryMeta::default(),
            size: 0,
            content: Content::Unfilled,
            alias: None,
        });
        self.inodes.len() as InodeId - 1
    }

    fn is_dir_node(&self, n: NodeId) -> bool {
        match self.nodes[n as usize].state {
            State::Present(i) => self.inodes[self.resolve(i) as usize].kind == InodeKind::Directory,
            _ => true,
        }
    }

    fn walk(&self, path: &[Vec<u8>]) -> Walk {
        let k = self.layer;
        if path.is_empty() {
            return Walk::Found { node: Some(ROOT) };
        }
        let mut cur = ROOT;
        for (i, comp) in path.iter().enumerate() {
            if self.nodes[cur as usize].opaque_below > k {
                return Walk::Hidden;
            }
            let Some(&child) = self.nodes[cur as usize].children.get(comp) else {
                return Walk::Found { node: None };
            };
            let c = &self.nodes[child as usize];
            if c.hide_below > k {
                return Walk::Hidden;
            }
            if i + 1 == path.len() {
                return Walk::Found { node: Some(child) };
            }
            if !self.is_dir_node(child) {
                if c.layer > k {
                    return Walk::Hidden;
                }
                return Walk::BelowNonDir(display_path(&path[..=i]));
            }
            cur = child;
        }
        unreachable!("the loop returns at the last component")
    }

    fn place(&self, path: &[Vec<u8>], is_dir: bool) -> Result<Option<Placement>> {
        let k = self.layer;
        Ok(match self.walk(path) {
            Walk::Hidden => None,
            Walk::BelowNonDir(p) => {
                return Err(self.hostile(
                    path,
                    format!("lies below {p:?}, which this layer made a non-directory"),
                ))
            }
            Walk::Found { node: None } => Some(Placement::Create),
            Walk::Found { node: Some(x), .. } => {
                let n = &self.nodes[x as usize];
                match n.state {
                    State::Absent => Some(Placement::Create),
                    State::Implicit if is_dir => Some(Placement::Create),
                    State::Implicit if n.layer > k || x == ROOT => None,
                    State::Implicit => Some(Placement::Replace(x)),
                    State::Present(_) if n.layer > k => None,
                    State::Present(i) => {
                        if is_dir && self.is_dir_node(x) {
                            Some(Placement::UpdateMeta(i))
                        } else if x == ROOT {
                            return Err(self.hostile(path, "replaces the root directory"));
                        } else {
                            Some(Placement::Replace(x))
                        }
                    }
                }
            }
        })
    }

    /// The child `name` of `parent`, created as a mark-only node if missing.
    fn child_or_absent(&mut self, parent: NodeId, name: &[u8]) -> NodeId {
        if let Some(&c) = self.nodes[parent as usize].children.get(name) {
            return c;
        }
        self.nodes.push(Node {
            children: BTreeMap::new(),
            state: State::Absent,
            layer: self.layer,
            hide_below: 0,
            opaque_below: 0,
        });
        let id = self.nodes.len() as NodeId - 1;
        self.nodes[parent as usize]
            .children
            .insert(name.to_vec(), id);
        id
    }

    /// Creates the missing nodes of `path`, and turns
    /// ancestors that only carried marks into implicit directories.
    fn materialize(&mut self, path: &[Vec<u8>], state: State) -> NodeId {
        let k = self.layer;
        let mut cur = ROOT;
        for (i, comp) in path.iter().enumerate() {
            let last = i + 1 == path.len();
            let next = self.child_or_absent(cur, comp);
            if !last && self.nodes[next as usize].state == State::Absent {
                self.nodes[next as usize].state = State::Implicit;
                self.nodes[next as usize].layer = self.nodes[next as usize].layer.max(k);
            }
            cur = next;
        }
        if !path.is_empty() || state != State::Absent {
            let n = &mut self.nodes[cur as usize];
            n.state = state;
            n.layer = n.layer.max(k);
        }
        cur
    }

    fn apply(&mut self, path: &[Vec<u8>], placement: Placement, inode: InodeId) {
        match placement {
            Placement::Create => {
                self.materialize(path, State::Present(inode));
            }
            Placement::Replace(x) => {
                // Everything below x came from this same layer: upper layers
                // would have created x themselves.
                let n = &mut self.nodes[x as usize];
                n.children.clear();
                n.state = State::Present(inode);
            }
            Placement::UpdateMeta(old) => {
                let old = self.resolve(old);
                self.inodes[old as usize].meta = self.inodes[inode as usize].meta.clone();
            }
        }
    }

    fn take_waiters(&mut self, k: PathKey) -> Vec<Waiter> {
        let layer = self.layer;
        match self.waiters.get_mut(&k) {
            None => Vec::new(),
            Some(list) => {
                let (upper, same): (Vec<Waiter>, Vec<Waiter>) =
                    list.drain(..).partition(|w| w.layer > layer);
                *list = same;
                if list.is_empty() {
                    self.waiters.remove(&k);
                }
                upper
            }
        }
    }

    fn bind(&mut self, waiters: Vec<Waiter>, inode: InodeId, path: &[Vec<u8>]) -> Result<()> {
        let target = self.resolve(inode);
        if self.inodes[target as usize].kind == InodeKind::Directory {
            if let Some(w) = waiters.first() {
                return Err(self.hostile(
                    path,
                    format!("is a directory, and {} hardlinks to it", w.link_path),
                ));
            }
        }
        for w in waiters {
            if w.inode != target {
                self.inodes[w.inode as usize].alias = Some(target);
            }
        }
        Ok(())
    }

    /// Adds one entry of the current layer.
    pub fn add_entry(&mut self, e: &LayerEntry) -> Result<Action> {
        match &e.kind {
            EntryKind::Whiteout => self.mark(e, false),
            EntryKind::Opaque => self.mark(e, true),
            EntryKind::HardLink(target) => self.hardlink(e, target),
            _ => self.plain(e),
        }
    }

    fn plain(&mut self, e: &LayerEntry) -> Result<Action> {
        let is_dir = e.kind == EntryKind::Directory;
        let k = key(&e.path);
        let waiters = self.take_waiters(k);
        let placement = self.place(&e.path, is_dir)?;
        if placement.is_none() && waiters.is_empty() {
            self.layer_paths.insert(k, LayerSlot::Skipped(e.index));
            return Ok(Action::Done);
        }
        let inode = self.new_inode(e);
        if let Some(p) = placement {
            self.apply(&e.path, p, inode);
        }
        self.bind(waiters, inode, &e.path)?;
        self.layer_paths.insert(k, LayerSlot::Inode(inode));
        Ok(if e.kind == EntryKind::File {
            Action::Capture(inode)
        } else {
            Action::Done
        })
    }

    /// Finds the inode a hardlink in this layer points at, creating a
    /// placeholder if the target has yet to be read.
    fn link_target(&mut self, link_path: &[Vec<u8>], target: &[Vec<u8>]) -> Result<InodeId> {
        let mut tkey = key(target);
        for _ in 0..64 {
            match self.layer_paths.get(&tkey).cloned() {
                Some(LayerSlot::Inode(i)) => {
                    let r = self.resolve(i);
                    if self.inodes[r as usize].kind == InodeKind::Directory {
                        return Err(self.hostile(link_path, "is a hardlink to a directory"));
                    }
                    return Ok(i);
                }
                Some(LayerSlot::Skipped(index)) => {
                    let ph = self.placeholder();
                    self.refetch.push((index, ph));
                    self.layer_paths.insert(tkey, LayerSlot::Inode(ph));
                    return Ok(ph);
                }
                Some(LayerSlot::Alias(next)) => tkey = next,
                None => {
                    let ph = self.placeholder();
                    let w = Waiter {
                        layer: self.layer,
                        inode: ph,
                        link_path: display_path(link_path),
                        target_path: display_path(target),
                    };
                    self.waiters.entry(tkey).or_default().push(w);
                    return Ok(ph);
                }
            }
        }
        Err(self.hostile(link_path, "is a hardlink chain that does not end"))
    }

    fn hardlink(&mut self, e: &LayerEntry, target: &[Vec<u8>]) -> Result<Action> {
        let k = key(&e.path);
        if target == e.path.as_slice() {
            return Err(self.hostile(&e.path, "is a hardlink to itself"));
        }
        let waiters = self.take_waiters(k);
        let placement = self.place(&e.path, false)?;
        if placement.is_none() && waiters.is_empty() {
            self.layer_paths.insert(k, LayerSlot::Alias(key(target)));
            return Ok(Action::Done);
        }
        let inode = self.link_target(&e.path, target)?;
        if let Some(p) = placement {
            self.apply(&e.path, p, inode);
        }
        self.bind(waiters, inode, &e.path)?;
        self.layer_paths.insert(k, LayerSlot::Inode(inode));
        Ok(Action::Done)
    }

    fn mark(&mut self, e: &LayerEntry, opaque: bool) -> Result<Action> {
        let k = key(&e.path);
        if !opaque {
            let waiters = self.take_waiters(k);
            if let Some(w) = waiters.first() {
                return Err(self.hostile(
                    &e.path,
                    format!(
                        "is deleted by this layer, but {} in a higher layer hardlinks to it",
                        w.link_path
                    ),
                ));
            }
        }
        match self.walk(&e.path) {
            // Shadowed, or below a file this layer just wrote (umoci writes
            // whiteouts for a directory's old children after replacing it).
            Walk::Hidden | Walk::BelowNonDir(_) => return Ok(Action::Done),
            Walk::Found { .. } => {}
        }
        let layer = self.layer;
        let node = match self.walk(&e.path) {
            Walk::Found { node: Some(n), .. } => n,
            _ => self.materialize_marks_only(&e.path),
        };
        let n = &mut self.nodes[node as usize];
        if opaque {
            n.opaque_below = n.opaque_below.max(layer);
        } else {
            n.hide_below = n.hide_below.max(layer);
        }
        Ok(Action::Done)
    }

    /// Creates nodes for a mark without making any ancestor appear.
    fn materialize_marks_only(&mut self, path: &[Vec<u8>]) -> NodeId {
        let mut cur = ROOT;
        for comp in path {
            cur = self.child_or_absent(cur, comp);
        }
        cur
    }

    /// Stores a captured regular file's data references.
    pub fn set_file(&mut self, inode: InodeId, refs: Vec<PendingRef>) {
        self.inodes[inode as usize].content = Content::File(FileRefs::from_vec(refs));
    }

    /// Ends the current layer's main pass. Returns the members (by index) to
    /// read again, each with the placeholder inode to fill via [`Self::fill`].
    pub fn end_layer(&mut self) -> Vec<(u64, InodeId)> {
        let mut r = std::mem::take(&mut self.refetch);
        r.sort_unstable();
        r
    }

    /// Fills a placeholder from a re-read member. Returns whether its data
    /// must be captured.
    pub fn fill(&mut self, e: &LayerEntry, placeholder: InodeId) -> Result<Action> {
        match &e.kind {
            EntryKind::HardLink(_) | EntryKind::Whiteout | EntryKind::Opaque => {
                return Err(self.hostile(&e.path, "changed between two reads of the layer"))
            }
            EntryKind::Directory => {
                return Err(self.hostile(&e.path, "is a directory that a hardlink points to"))
            }
            _ => {}
        }
        let id = self.new_inode(e);
        let fresh = self.inodes.pop().expect("just pushed");
        debug_assert_eq!(id as usize, self.inodes.len());
        self.inodes[placeholder as usize] = fresh;
        Ok(if e.kind == EntryKind::File {
            Action::Capture(placeholder)
        } else {
            Action::Done
        })
    }

    /// Checks that every hardlink found its target.
    pub fn finish(self) -> Result<FinalTree> {
        if let Some(w) = self.waiters.values().flatten().next() {
            return Err(BuildError::Invalid(format!(
                "hardlink {} points to {:?}, which no layer below it contains",
                w.link_path, w.target_path
            )));
        }
        Ok(FinalTree { tree: self })
    }
}

/// A finished tree, ready to be numbered and written.
pub struct FinalTree {
    tree: MergeTree,
}

/// One directory entry of the final tree.
pub enum FinalNode<'a> {
    Directory {
        meta: Option<&'a EntryMeta>,
        children: Vec<(&'a [u8], NodeId)>,
    },
    Other {
        inode: InodeId,
    },
}

impl FinalTree {
    pub fn root(&self) -> NodeId {
        ROOT
    }

    /// The node, or `None` if it does not exist in the final tree.
    pub fn node(&self, id: NodeId) -> Option<FinalNode<'_>> {
        let n = &self.tree.nodes[id as usize];
        let children = || {
            n.children
                .iter()
                .filter(|(_, &c)| self.tree.nodes[c as usize].state != State::Absent)
                .map(|(name, &c)| (name.as_slice(), c))
                .collect()
        };
        match n.state {
            State::Absent => None,
            State::Implicit => Some(FinalNode::Directory {
                meta: None,
                children: children(),
            }),
            State::Present(i) => {
                let i = self.tree.resolve(i);
                let inode = &self.tree.inodes[i as usize];
                if inode.kind == InodeKind::Directory {
                    Some(FinalNode::Directory {
                        meta: Some(&inode.meta),
                        children: children(),
                    })
                } else {
                    Some(FinalNode::Other { inode: i })
                }
            }
        }
    }

    pub fn inode(&self, id: InodeId) -> &Inode {
        &self.tree.inodes[id as usize]
    }

    /// The node at an absolute or relative path, if the final tree has it.
    pub fn lookup(&self, path: &[u8]) -> Option<NodeId> {
        let mut cur = ROOT;
        for comp in path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
        {
            let next = *self.tree.nodes[cur as usize].children.get(comp)?;
            self.node(next)?;
            cur = next;
        }
        Some(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{normalize, LayerEntry};

    enum E<'a> {
        File(&'a str, &'a str),
        Dir(&'a str),
        Link(&'a str, &'a str),
        Sym(&'a str, &'a str),
        Wh(&'a str),
        Opq(&'a str),
    }

    /// Applies layers (listed bottom first) and lists the final tree as
    /// `path -> description`, with content standing in for file data.
    fn merge(layers: &[&[E]]) -> Result<Vec<String>> {
        let mut tree = MergeTree::new();
        let mut data: HashMap<InodeId, String> = HashMap::new();
        for (i, layer) in layers.iter().enumerate().rev() {
            tree.begin_layer(i as u16 + 1, &format!("layer{}", i + 1));
            let entries: Vec<(LayerEntry, String)> = layer
                .iter()
                .enumerate()
                .map(|(idx, e)| {
                    let (path, kind, content) = match e {
                        E::File(p, c) => (*p, EntryKind::File, c.to_string()),
                        E::Dir(p) => (*p, EntryKind::Directory, String::new()),
                        E::Link(p, t) => (
                            *p,
                            EntryKind::HardLink(normalize(t.as_bytes()).unwrap()),
                            String::new(),
                        ),
                        E::Sym(p, t) => {
                            (*p, EntryKind::Symlink(t.as_bytes().to_vec()), String::new())
                        }
                        E::Wh(p) => (*p, EntryKind::Whiteout, String::new()),
                        E::Opq(p) => (*p, EntryKind::Opaque, String::new()),
                    };
                    let e = LayerEntry {
                        index: idx as u64,
                        path: normalize(path.as_bytes()).unwrap(),
                        kind,
                        meta: EntryMeta::default(),
                        size: content.len() as u64,
                        sparse: None,
                    };
                    (e, content)
                })
                .collect();
            for (e, content) in &entries {
                if let Action::Capture(inode) = tree.add_entry(e)? {
                    data.insert(inode, content.clone());
                }
            }
            for (index, ph) in tree.end_layer() {
                let (e, content) = &entries[index as usize];
                if let Action::Capture(inode) = tree.fill(e, ph)? {
                    data.insert(inode, content.clone());
                }
            }
        }
        let t = tree.finish()?;
        let mut out = Vec::new();
        let mut stack = vec![(t.root(), String::new())];
        while let Some((node, path)) = stack.pop() {
            match t.node(node) {
                Some(FinalNode::Directory { children, .. }) => {
                    if !path.is_empty() {
                        out.push(format!("{path}/"));
                    }
                    for (name, c) in children.into_iter().rev() {
                        stack.push((c, format!("{path}/{}", String::from_utf8_lossy(name))));
                    }
                }
                Some(FinalNode::Other { inode }) => {
                    let desc = match &t.inode(inode).content {
                        Content::Symlink(s) => format!("-> {}", String::from_utf8_lossy(s)),
                        _ => data.get(&inode).cloned().unwrap_or_default(),
                    };
                    out.push(format!("{path}={desc}#{inode}"));
                }
                None => {}
            }
        }
        out.sort();
        Ok(out)
    }

    fn paths(v: &[String]) -> Vec<String> {
        v.iter()
            .map(|s| s.split(['=', '#']).next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn upper_wins_and_whiteouts_delete() {
        let t = merge(&[
            &[
                E::Dir("a"),
                E::File("a/x", "old"),
                E::File("a/y", "y"),
                E::File("z", "z"),
            ],
            &[E::File("a/x", "new"), E::Wh("a/y"), E::Wh("z")],
        ])
        .unwrap();
        assert_eq!(paths(&t), vec!["/a/", "/a/x"]);
        assert!(t[1].starts_with("/a/x=new"));
    }

    #[test]
    fn opaque_hides_lower_children_only() {
        let t = merge(&[
            &[E::Dir("d"), E::File("d/lower", "l"), E::File("keep", "k")],
            &[E::Dir("d"), E::Opq("d"), E::File("d/upper", "u")],
        ])
        .unwrap();
        assert_eq!(paths(&t), vec!["/d/", "/d/upper", "/keep"]);
    }

    #[test]
    fn whiteouts_do_not_hide_their_own_layer() {
        let t = merge(&[&[E::File("f", "1")], &[E::Wh("f"), E::File("f", "2")]]).unwrap();
        assert!(t[0].starts_with("/f=2"));
        let t = merge(&[&[E::File("f", "1")], &[E::File("f", "2"), E::Wh("f")]]).unwrap();
        assert!(t[0].starts_with("/f=2"));
    }

    #[test]
    fn file_replaces_directory_and_back() {
        let t = merge(&[
            &[E::Dir("p"), E::File("p/c", "c")],
            &[E::File("p", "now a file")],
        ])
        .unwrap();
        assert_eq!(paths(&t), vec!["/p"]);
        let t = merge(&[&[E::File("p", "file")], &[E::File("p/c", "c")]]).unwrap();
        assert_eq!(paths(&t), vec!["/p/", "/p/c"]);
    }

    #[test]
    fn hardlinks_keep_the_content_of_their_time() {
        // Layer 2 links to f, then rewrites f: the link keeps layer 1's f.
        let t = merge(&[
            &[E::File("f", "one")],
            &[E::Link("g", "f"), E::File("f", "two")],
        ])
        .unwrap();
        let f = t.iter().find(|s| s.starts_with("/f=")).unwrap();
        let g = t.iter().find(|s| s.starts_with("/g=")).unwrap();
        assert!(f.starts_with("/f=two") && g.starts_with("/g=one"), "{t:?}");
        // Same layer: link then target shadowed by an upper layer.
        let t = merge(&[
            &[E::File("f", "one"), E::Link("g", "f")],
            &[E::File("f", "two")],
        ])
        .unwrap();
        let g = t.iter().find(|s| s.starts_with("/g=")).unwrap();
        assert!(g.starts_with("/g=one"), "{t:?}");
        // Links in one layer share an inode.
        let t = merge(&[&[E::File("f", "x"), E::Link("g", "f"), E::Link("h", "g")]]).unwrap();
        let inos: Vec<&str> = t.iter().map(|s| s.rsplit('#').next().unwrap()).collect();
        assert_eq!(inos[0], inos[1]);
        assert_eq!(inos[1], inos[2]);
    }

    #[test]
    fn shadowed_files_are_not_captured() {
        let mut tree = MergeTree::new();
        tree.begin_layer(2, "top");
        let top = LayerEntry {
            index: 0,
            path: normalize(b"f").unwrap(),
            kind: EntryKind::File,
            meta: EntryMeta::default(),
            size: 1,
            sparse: None,
        };
        assert!(matches!(tree.add_entry(&top).unwrap(), Action::Capture(_)));
        tree.end_layer();
        tree.begin_layer(1, "bottom");
        assert_eq!(tree.add_entry(&top).unwrap(), Action::Done);
    }

    #[test]
    fn errors() {
        assert!(merge(&[&[E::Sym("s", "/etc"), E::File("s/passwd", "x")]]).is_err());
        assert!(merge(&[&[E::Link("g", "nowhere")]]).is_err());
        assert!(merge(&[&[E::Dir("d"), E::Link("g", "d")]]).is_err());
        assert!(merge(&[&[E::File("f", "x")], &[E::Wh("f")], &[E::Link("g", "f")]]).is_err());
        // A whiteout below a file of its own layer is ignored (umoci writes these).
        assert!(merge(&[
            &[E::Dir("d"), E::File("d/x", "x")],
            &[E::File("d", "f"), E::Wh("d/x")]
        ])
        .is_ok());
    }
}
