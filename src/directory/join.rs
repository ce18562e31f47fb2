//! Joins a guide's volumes, each a tagged PDF written by Typst, into one tagged PDF: one page
//! tree, one structure tree (the volumes' Document elements become the first one), one parent
//! tree with its keys shifted volume by volume, the named destinations, role maps and IDs put
//! together, bookmarks rebuilt from the guide's sections, and the contents' links pointed at
//! their headings.

use lopdf::{Dictionary, Document, Object, ObjectId, StringFormat};

/// The scheme the layout gives the contents' links, whose targets live in other volumes; the
/// join turns each into a link to the named destination `t{N}`.
const TARGET_SCHEME: &[u8] = b"x-proximites-target:";

/// How many entries a node of a number or name tree holds before it is split into kids.
const TREE_NODE: usize = 512;

/// A bookmark of the joined PDF.
#[derive(Debug, Clone)]
pub struct Bookmark {
    pub level: u8,
    pub title: String,
    /// The named destination it opens.
    pub destination: String,
}

type Result<T> = std::result::Result<T, String>;

fn fail(what: &str) -> impl FnOnce(lopdf::Error) -> String + '_ {
    move |e| format!("assemblage du PDF / joining the PDF: {what}: {e}")
}

fn reference(dict: &Dictionary, key: &[u8]) -> Result<ObjectId> {
    dict.get(key)
        .and_then(Object::as_reference)
        .map_err(fail(&String::from_utf8_lossy(key)))
}

/// The first volume's objects that the join rewrites, written last.
struct Base {
    catalog: (ObjectId, Dictionary),
    pages: (ObjectId, Dictionary),
    struct_root: (ObjectId, Dictionary),
    document_element: (ObjectId, Dictionary),
    metadata: Option<(ObjectId, Object)>,
    info: Option<Object>,
    id: Option<Object>,
}

/// What every volume brings to the shared trees.
#[derive(Default)]
struct Shared {
    pages: Vec<ObjectId>,
    /// Children of the joined Document element.
    elements: Vec<Object>,
    parent_tree: Vec<(i64, Object)>,
    next_key: i64,
    role_map: Dictionary,
    ids: Vec<(Vec<u8>, Object)>,
    destinations: Vec<(Vec<u8>, Object)>,
    /// Named destinations the contents' links were given.
    linked: Vec<Vec<u8>>,
}

/// The joined file, written as the volumes are read: only one volume is ever held parsed.
struct Output {
    bytes: Vec<u8>,
    /// Where each object starts, by number.
    offsets: Vec<Option<(usize, u16)>>,
    next_id: u32,
}

impl Output {
    fn write(&mut self, id: ObjectId, object: &Object) -> Result<()> {
        let index = id.0 as usize;
        if self.offsets.len() <= index {
            self.offsets.resize(index + 1, None);
        }
        self.offsets[index] = Some((self.bytes.len(), id.1));
        self.bytes
            .extend_from_slice(format!("{} {} obj\n", id.0, id.1).as_bytes());
        lopdf::Writer::write_object(&mut self.bytes, object)
            .map_err(|e| format!("assemblage du PDF / joining the PDF: {e}"))?;
        self.bytes.extend_from_slice(b"\nendobj\n");
        Ok(())
    }

    fn add(&mut self, object: Object) -> Result<ObjectId> {
        let id = (self.next_id, 0);
        self.next_id += 1;
        self.write(id, &object)?;
        Ok(id)
    }

    /// The cross-reference table and the trailer.
    fn finish(mut self, trailer: Dictionary) -> Result<Vec<u8>> {
        let start = self.bytes.len();
        let size = self.offsets.len().max(self.next_id as usize);
        let mut xref = format!("xref\n0 {size}\n0000000000 65535 f\r\n");
        for index in 1..size {
            match self.offsets.get(index).copied().flatten() {
                Some((offset, generation)) => {
                    xref.push_str(&format!("{offset:010} {generation:05} n\r\n"))
                }
                None => xref.push_str("0000000000 00001 f\r\n"),
            }
        }
        self.bytes.extend_from_slice(xref.as_bytes());
        let mut trailer = trailer;
        trailer.set("Size", Object::Integer(size as i64));
        self.bytes.extend_from_slice(b"trailer\n");
        lopdf::Writer::write_object(&mut self.bytes, &Object::Dictionary(trailer))
            .map_err(|e| format!("assemblage du PDF / joining the PDF: {e}"))?;
        self.bytes
            .extend_from_slice(format!("\nstartxref\n{start}\n%%EOF\n").as_bytes());
        Ok(self.bytes)
    }
}

fn take_dictionary(document: &mut Document, id: ObjectId, what: &str) -> Result<Dictionary> {
    match document.objects.remove(&id) {
        Some(Object::Dictionary(dict)) => Ok(dict),
        _ => Err(format!(
            "assemblage du PDF / joining the PDF: {what} is not a dictionary"
        )),
    }
}

/// Joins `volumes` in order; the first gives the catalog, metadata and document information.
pub fn join(volumes: &[Vec<u8>], bookmarks: &[Bookmark]) -> Result<Vec<u8>> {
    let mut base: Option<Base> = None;
    let mut shared = Shared::default();
    let mut output = Output {
        bytes: Vec::with_capacity(volumes.iter().map(Vec::len).sum::<usize>() + 4096),
        offsets: Vec::new(),
        next_id: 1,
    };
    // A link's description, read out by screen readers: its heading's title.
    let titles: std::collections::HashMap<&[u8], &str> = bookmarks
        .iter()
        .map(|b| (b.destination.as_bytes(), b.title.as_str()))
        .collect();
    for bytes in volumes {
        let mut document = Document::load_mem(bytes).map_err(fail("lecture d'un volume"))?;
        document.renumber_objects_with(output.next_id);
        output.next_id = document.max_id + 1;
        if output.bytes.is_empty() {
            output
                .bytes
                .extend_from_slice(format!("%PDF-{}\n", document.version).as_bytes());
            // Bytes above 127 tell transfer programs the file is binary.
            output.bytes.extend_from_slice(b"%\xe2\xe3\xcf\xd3\n");
        }
        let pages: Vec<ObjectId> = document.page_iter().collect();
        let catalog_id = reference(&document.trailer, b"Root")?;
        let catalog = take_dictionary(&mut document, catalog_id, "catalog")?;
        let pages_id = reference(&catalog, b"Pages")?;
        let struct_root_id = reference(&catalog, b"StructTreeRoot")?;
        let struct_root = take_dictionary(&mut document, struct_root_id, "StructTreeRoot")?;

        // Structure parents are numbered per volume: shift them past the earlier volumes'.
        let offset = shared.next_key;
        if offset > 0 {
            for object in document.objects.values_mut() {
                shift_struct_parents(object, offset);
            }
        }
        let mut parent_tree = Vec::new();
        if let Ok(tree) = struct_root.get(b"ParentTree") {
            collect_tree(&document, tree, b"Nums", &mut parent_tree, &mut |key| {
                key.as_i64().ok()
            })?;
        }
        let next_key = match struct_root.get(b"ParentTreeNextKey") {
            Ok(key) => key.as_i64().map_err(fail("ParentTreeNextKey"))?,
            Err(_) => parent_tree.iter().map(|(k, _)| k + 1).max().unwrap_or(0),
        };
        shared.next_key = offset + next_key;
        if let Ok(Object::Dictionary(roles)) = struct_root
            .get(b"RoleMap")
            .and_then(|o| document.dereference(o).map(|(_, o)| o))
        {
            for (role, standard) in roles.iter() {
                shared.role_map.set(role.clone(), standard.clone());
            }
        }
        if let Ok(tree) = struct_root.get(b"IDTree") {
            collect_tree(&document, tree, b"Names", &mut shared.ids, &mut |key| {
                key.as_str().ok().map(<[u8]>::to_vec)
            })?;
        }
        if let Ok(Object::Dictionary(names)) = catalog
            .get(b"Names")
            .and_then(|o| document.dereference(o).map(|(_, o)| o))
        {
            if let Ok(tree) = names.get(b"Dests") {
                collect_tree(
                    &document,
                    &tree.clone(),
                    b"Names",
                    &mut shared.destinations,
                    &mut |key| key.as_str().ok().map(<[u8]>::to_vec),
                )?;
            }
        }

        // The volume's Document element gives its children to the joined one.
        let top = match struct_root.get(b"K").map_err(fail("K"))? {
            Object::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        let mut volume_element = None;
        let mut children = Vec::new();
        for item in top {
            let Ok(id) = item.as_reference() else {
                children.push(item);
                continue;
            };
            let element = document.get_dictionary(id).map_err(fail("Document"))?;
            let is_document = matches!(element.get(b"S"), Ok(Object::Name(n)) if n == b"Document");
            if !is_document || volume_element.is_some() {
                children.push(item);
                continue;
            }
            let element = take_dictionary(&mut document, id, "Document")?;
            let page = element.get(b"Pg").ok().cloned();
            let kids = match element.get(b"K") {
                Ok(Object::Array(items)) => items.clone(),
                Ok(other) => vec![other.clone()],
                Err(_) => Vec::new(),
            };
            for kid in kids {
                children.push(match (kid, &page) {
                    // Marked content right under the Document element: its page said where.
                    (Object::Integer(mcid), Some(page)) => {
                        Object::Dictionary(Dictionary::from_iter([
                            ("Type", Object::Name(b"MCR".to_vec())),
                            ("Pg", page.clone()),
                            ("MCID", Object::Integer(mcid)),
                        ]))
                    }
                    (kid, _) => kid,
                });
            }
            volume_element = Some((id, element));
        }
        let (volume_element_id, volume_element) =
            volume_element.ok_or("assemblage du PDF / joining the PDF: no Document element")?;

        // The bookmarks are rebuilt for the whole guide.
        if let Ok(outlines) = reference(&catalog, b"Outlines") {
            remove_outline(&mut document, outlines);
        }
        // The structure tree's own nodes are made again for the whole guide.
        for key in [b"ParentTree".as_slice(), b"IDTree", b"RoleMap"] {
            if let Ok(id) = reference(&struct_root, key) {
                document.objects.remove(&id);
            }
        }
        let base = match &mut base {
            Some(base) => {
                // Only the first volume's catalog, page tree, information and metadata remain.
                let mut dropped = vec![pages_id];
                if let Ok(info) = reference(&document.trailer, b"Info") {
                    dropped.push(info);
                }
                if let Ok(metadata) = reference(&catalog, b"Metadata") {
                    dropped.push(metadata);
                }
                for id in dropped {
                    document.objects.remove(&id);
                }
                base
            }
            None => {
                let pages = take_dictionary(&mut document, pages_id, "Pages")?;
                let metadata = reference(&catalog, b"Metadata")
                    .ok()
                    .and_then(|id| document.objects.remove(&id).map(|o| (id, o)));
                let info = document.trailer.get(b"Info").ok().cloned();
                let id = document.trailer.get(b"ID").ok().cloned();
                base.insert(Base {
                    catalog: (catalog_id, catalog),
                    pages: (pages_id, pages),
                    struct_root: (struct_root_id, struct_root),
                    document_element: (volume_element_id, volume_element),
                    metadata,
                    info,
                    id,
                })
            }
        };
        let joined = base.document_element.0;

        // This volume's pages, sections and marked content now hang from the joined trees.
        for &page in &pages {
            document
                .get_dictionary_mut(page)
                .map_err(fail("page"))?
                .set("Parent", Object::Reference(base.pages.0));
        }
        for child in &children {
            if let Ok(id) = child.as_reference() {
                if let Ok(Object::Dictionary(child)) = document.get_object_mut(id) {
                    if child.has(b"P") {
                        child.set("P", Object::Reference(joined));
                    }
                }
            }
        }
        for (key, mut value) in parent_tree {
            match &mut value {
                Object::Reference(id) if *id == volume_element_id => {
                    value = Object::Reference(joined)
                }
                Object::Reference(id) => {
                    if let Ok(Object::Array(items)) = document.get_object_mut(*id) {
                        replace_reference(items, volume_element_id, joined);
                    }
                }
                Object::Array(items) => replace_reference(items, volume_element_id, joined),
                _ => {}
            }
            shared.parent_tree.push((key + offset, value));
        }
        shared.elements.extend(children);
        retarget_links(&mut document, &pages, &titles, &mut shared.linked)?;
        shared.pages.extend(pages);
        for (id, object) in std::mem::take(&mut document.objects) {
            output.write(id, &object)?;
        }
    }
    let base = base.ok_or("assemblage du PDF / joining the PDF: no volume")?;
    assemble(base, shared, bookmarks, output)
}

/// Writes the shared trees and the first volume's rewritten objects, then the trailer.
fn assemble(
    mut base: Base,
    shared: Shared,
    bookmarks: &[Bookmark],
    mut output: Output,
) -> Result<Vec<u8>> {
    let page_count = shared.pages.len();
    base.pages.1.set(
        "Kids",
        Object::Array(shared.pages.iter().map(|&p| Object::Reference(p)).collect()),
    );
    base.pages
        .1
        .set("Count", Object::Integer(page_count as i64));
    output.write(base.pages.0, &Object::Dictionary(base.pages.1))?;

    let (joined, mut element) = base.document_element;
    element.set("K", Object::Array(shared.elements));
    output.write(joined, &Object::Dictionary(element))?;

    let mut parent_tree = shared.parent_tree;
    parent_tree.sort_by_key(|(key, _)| *key);
    let parent_tree = tree(&mut output, parent_tree, b"Nums", |key| {
        Object::Integer(*key)
    })?;
    let mut ids = shared.ids;
    ids.sort_by(|a, b| a.0.cmp(&b.0));
    if ids.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err("assemblage du PDF / joining the PDF: a structure ID repeats".into());
    }
    let (struct_root_id, mut struct_root) = base.struct_root;
    struct_root.set("K", Object::Reference(joined));
    struct_root.set("ParentTree", parent_tree);
    struct_root.set("ParentTreeNextKey", Object::Integer(shared.next_key));
    if !shared.role_map.is_empty() {
        struct_root.set("RoleMap", Object::Dictionary(shared.role_map));
    }
    if ids.is_empty() {
        struct_root.remove(b"IDTree");
    } else {
        let id_tree = tree(&mut output, ids, b"Names", |key| {
            Object::String(key.clone(), StringFormat::Literal)
        })?;
        struct_root.set("IDTree", id_tree);
    }
    output.write(struct_root_id, &Object::Dictionary(struct_root))?;

    // Named destinations: every volume's headings, so links and bookmarks reach any of them.
    let mut destinations = shared.destinations;
    destinations.sort_by(|a, b| a.0.cmp(&b.0));
    destinations.dedup_by(|a, b| a.0 == b.0);
    let known: std::collections::HashSet<Vec<u8>> =
        destinations.iter().map(|(name, _)| name.clone()).collect();
    if let Some(missing) = shared.linked.iter().find(|name| !known.contains(*name)) {
        return Err(format!(
            "assemblage du PDF / joining the PDF: the contents link to a missing heading ({})",
            String::from_utf8_lossy(missing)
        ));
    }
    let dests = tree(&mut output, destinations, b"Names", |key| {
        Object::String(key.clone(), StringFormat::Literal)
    })?;
    let outlines = outline(&mut output, bookmarks, &known)?;
    if let Some((id, mut metadata)) = base.metadata {
        if let Object::Stream(stream) = &mut metadata {
            update_page_count(stream, page_count);
        }
        output.write(id, &metadata)?;
    }
    let (catalog_id, mut catalog) = base.catalog;
    let mut names = match catalog.get(b"Names") {
        Ok(Object::Dictionary(names)) => names.clone(),
        _ => Dictionary::new(),
    };
    names.set("Dests", dests);
    catalog.set("Names", Object::Dictionary(names));
    match outlines {
        Some(outlines) => catalog.set("Outlines", Object::Reference(outlines)),
        None => {
            catalog.remove(b"Outlines");
        }
    }
    output.write(catalog_id, &Object::Dictionary(catalog))?;

    let mut trailer = Dictionary::new();
    trailer.set("Root", Object::Reference(catalog_id));
    if let Some(info) = base.info {
        trailer.set("Info", info);
    }
    if let Some(id) = base.id {
        trailer.set("ID", id);
    }
    output.finish(trailer)
}

fn replace_reference(items: &mut [Object], from: ObjectId, to: ObjectId) {
    for item in items {
        if matches!(item, Object::Reference(id) if *id == from) {
            *item = Object::Reference(to);
        }
    }
}

/// Adds `offset` to every structure-parent key of an object (pages, annotations, XObjects).
fn shift_struct_parents(object: &mut Object, offset: i64) {
    let dict = match object {
        Object::Dictionary(dict) => dict,
        Object::Stream(stream) => &mut stream.dict,
        Object::Array(items) => {
            items
                .iter_mut()
                .for_each(|item| shift_struct_parents(item, offset));
            return;
        }
        _ => return,
    };
    for (key, value) in dict.iter_mut() {
        match (key.as_slice(), &mut *value) {
            (b"StructParents" | b"StructParent", Object::Integer(n)) => *n += offset,
            // Annotations written inline in a page's /Annots.
            (_, Object::Array(_) | Object::Dictionary(_)) => shift_struct_parents(value, offset),
            _ => {}
        }
    }
}

/// Reads a number tree (`Nums`) or a name tree (`Names`), its kids included.
fn collect_tree<K>(
    document: &Document,
    node: &Object,
    leaf: &[u8],
    out: &mut Vec<(K, Object)>,
    key: &mut dyn FnMut(&Object) -> Option<K>,
) -> Result<()> {
    let (_, node) = document.dereference(node).map_err(fail("arbre"))?;
    let Object::Dictionary(node) = node else {
        return Ok(());
    };
    if let Ok(Object::Array(items)) = node.get(leaf) {
        for pair in items.chunks(2) {
            if let [k, value] = pair {
                if let Some(k) = key(k) {
                    out.push((k, value.clone()));
                }
            }
        }
    }
    if let Ok(Object::Array(kids)) = node.get(b"Kids") {
        for kid in kids {
            collect_tree(document, kid, leaf, out, key)?;
        }
    }
    Ok(())
}

/// Writes sorted `entries` as a number or name tree, in kids of [`TREE_NODE`] entries when
/// there are more; returns a reference to its root.
fn tree<K>(
    output: &mut Output,
    entries: Vec<(K, Object)>,
    leaf: &'static [u8],
    key: impl Fn(&K) -> Object,
) -> Result<Object> {
    let node = |chunk: &[(K, Object)], limits: bool| {
        let mut dict = Dictionary::new();
        dict.set(
            leaf,
            Object::Array(
                chunk
                    .iter()
                    .flat_map(|(k, v)| [key(k), v.clone()])
                    .collect(),
            ),
        );
        if limits {
            if let (Some(first), Some(last)) = (chunk.first(), chunk.last()) {
                dict.set("Limits", Object::Array(vec![key(&first.0), key(&last.0)]));
            }
        }
        Object::Dictionary(dict)
    };
    if entries.len() <= TREE_NODE {
        return Ok(Object::Reference(output.add(node(&entries, false))?));
    }
    let mut kids = Vec::new();
    for chunk in entries.chunks(TREE_NODE) {
        kids.push(Object::Reference(output.add(node(chunk, true))?));
    }
    let mut root = Dictionary::new();
    root.set("Kids", Object::Array(kids));
    Ok(Object::Reference(output.add(Object::Dictionary(root))?))
}

/// Removes an outline and its items.
fn remove_outline(document: &mut Document, root: ObjectId) {
    let mut pending = vec![root];
    while let Some(id) = pending.pop() {
        let Some(Object::Dictionary(item)) = document.objects.remove(&id) else {
            continue;
        };
        for key in [b"First".as_slice(), b"Next"] {
            if let Ok(next) = reference(&item, key) {
                pending.push(next);
            }
        }
    }
}

/// Points the contents' links at the named destinations of their headings, noting them.
fn retarget_links(
    document: &mut Document,
    pages: &[ObjectId],
    titles: &std::collections::HashMap<&[u8], &str>,
    linked: &mut Vec<Vec<u8>>,
) -> Result<()> {
    let mut annotations: Vec<ObjectId> = Vec::new();
    for &page in pages {
        let page = document.get_dictionary_mut(page).map_err(fail("page"))?;
        if let Ok(Object::Array(annots)) = page.get_mut(b"Annots") {
            for annot in annots.iter_mut() {
                match annot {
                    Object::Dictionary(annot) => retarget(annot, titles, linked),
                    Object::Reference(id) => annotations.push(*id),
                    _ => {}
                }
            }
        }
    }
    for id in annotations {
        if let Ok(Object::Dictionary(annot)) = document.get_object_mut(id) {
            retarget(annot, titles, linked);
        }
    }
    Ok(())
}

fn retarget(
    annot: &mut Dictionary,
    titles: &std::collections::HashMap<&[u8], &str>,
    linked: &mut Vec<Vec<u8>>,
) {
    let target = match annot.get(b"A") {
        Ok(Object::Dictionary(action)) => match action.get(b"URI") {
            Ok(Object::String(uri, _)) => uri.strip_prefix(TARGET_SCHEME).map(<[u8]>::to_vec),
            _ => None,
        },
        _ => None,
    };
    let Some(target) = target else {
        return;
    };
    let name = [b"t".as_slice(), &target].concat();
    annot.remove(b"A");
    annot.set("Dest", Object::String(name.clone(), StringFormat::Literal));
    // Typst described the link by its address, which would be read out.
    match titles.get(name.as_slice()) {
        Some(title) => annot.set("Contents", text_string(title)),
        None => {
            annot.remove(b"Contents");
        }
    }
    linked.push(name);
}

/// A PDF text string: UTF-16 with its byte order mark, so accents survive.
fn text_string(text: &str) -> Object {
    let mut bytes = vec![0xfe, 0xff];
    bytes.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
    Object::String(bytes, StringFormat::Hexadecimal)
}

/// Builds the outline from the bookmarks (levels nest under the closest lower level); the
/// sections are closed so a long guide's outline opens short.
fn outline(
    output: &mut Output,
    bookmarks: &[Bookmark],
    known: &std::collections::HashSet<Vec<u8>>,
) -> Result<Option<ObjectId>> {
    let bookmarks: Vec<&Bookmark> = bookmarks
        .iter()
        .filter(|b| known.contains(b.destination.as_bytes()))
        .collect();
    if bookmarks.is_empty() {
        return Ok(None);
    }
    // Parent of each bookmark (None: top level), from the levels.
    let mut parents: Vec<Option<usize>> = Vec::with_capacity(bookmarks.len());
    let mut stack: Vec<usize> = Vec::new();
    for (i, bookmark) in bookmarks.iter().enumerate() {
        while stack
            .last()
            .is_some_and(|&open| bookmarks[open].level >= bookmark.level)
        {
            stack.pop();
        }
        parents.push(stack.last().copied());
        stack.push(i);
    }
    let mut reserve = || {
        output.next_id += 1;
        (output.next_id - 1, 0)
    };
    let root = reserve();
    let ids: Vec<ObjectId> = bookmarks.iter().map(|_| reserve()).collect();
    let mut by_parent: std::collections::HashMap<Option<usize>, Vec<usize>> =
        std::collections::HashMap::new();
    for (i, parent) in parents.iter().enumerate() {
        by_parent.entry(*parent).or_default().push(i);
    }
    for (parent, kids) in &by_parent {
        let parent_id = parent.map_or(root, |p| ids[p]);
        for (n, &i) in kids.iter().enumerate() {
            let mut item = Dictionary::new();
            item.set("Title", text_string(&bookmarks[i].title));
            item.set("Parent", Object::Reference(parent_id));
            item.set(
                "Dest",
                Object::String(
                    bookmarks[i].destination.as_bytes().to_vec(),
                    StringFormat::Literal,
                ),
            );
            if n > 0 {
                item.set("Prev", Object::Reference(ids[kids[n - 1]]));
            }
            if let Some(&next) = kids.get(n + 1) {
                item.set("Next", Object::Reference(ids[next]));
            }
            if let Some(own) = by_parent.get(&Some(i)) {
                item.set("First", Object::Reference(ids[own[0]]));
                item.set("Last", Object::Reference(ids[own[own.len() - 1]]));
                // Negative: closed, with this many children shown once opened.
                item.set("Count", Object::Integer(-(own.len() as i64)));
            }
            output.write(ids[i], &Object::Dictionary(item))?;
        }
    }
    let top = &by_parent[&None];
    let mut outlines = Dictionary::new();
    outlines.set("Type", Object::Name(b"Outlines".to_vec()));
    outlines.set("First", Object::Reference(ids[top[0]]));
    outlines.set("Last", Object::Reference(ids[top[top.len() - 1]]));
    outlines.set("Count", Object::Integer(top.len() as i64));
    output.write(root, &Object::Dictionary(outlines))?;
    Ok(Some(root))
}

/// The XMP metadata tells the page count: the first volume's own is updated to the guide's.
fn update_page_count(stream: &mut lopdf::Stream, pages: usize) {
    let xml = stream
        .decompressed_content()
        .unwrap_or_else(|_| stream.content.clone());
    let Ok(xml) = String::from_utf8(xml) else {
        return;
    };
    const OPEN: &str = "<xmpTPg:NPages>";
    const CLOSE: &str = "</xmpTPg:NPages>";
    let Some(start) = xml.find(OPEN) else {
        return;
    };
    let Some(length) = xml[start..].find(CLOSE) else {
        return;
    };
    let updated = format!("{}{OPEN}{pages}{}", &xml[..start], &xml[start + length..]);
    stream.dict.remove(b"Filter");
    stream.dict.remove(b"DecodeParms");
    stream.set_plain_content(updated.into_bytes());
}
