//! Section sizes of an ELF file (32 or 64 bit, little endian), to report flash and RAM.

use std::path::Path;

/// One section's name, size and flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub size: u64,
    /// SHF_ALLOC: occupies memory at run time.
    pub alloc: bool,
    /// SHF_WRITE: writable (RAM).
    pub write: bool,
    /// SHT_NOBITS: no bytes in the image (.bss, .uninit).
    pub nobits: bool,
}

/// Flash and static RAM of a firmware image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Allocated sections with contents: code, constants, initial values of data
    /// (on Cortex-M: .vector_table + .text + .rodata + .data).
    pub flash_bytes: u64,
    /// Writable allocated sections (on Cortex-M: .data + .bss + .uninit).
    pub ram_bytes: u64,
    pub sections: Vec<Section>,
}

/// Reads the section headers of an ELF file.
pub fn sections(path: &Path) -> Result<Vec<Section>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_sections(&data).ok_or_else(|| format!("{}: not a little-endian ELF file", path.display()))
}

/// Flash and RAM from the section headers.
pub fn sizes(path: &Path) -> Result<Sizes, String> {
    let sections = sections(path)?;
    let flash_bytes = sections
        .iter()
        .filter(|s| s.alloc && !s.nobits)
        .map(|s| s.size)
        .sum();
    let ram_bytes = sections
        .iter()
        .filter(|s| s.alloc && s.write)
        .map(|s| s.size)
        .sum();
    Ok(Sizes {
        flash_bytes,
        ram_bytes,
        sections,
    })
}

fn parse_sections(d: &[u8]) -> Option<Vec<Section>> {
    if d.get(..4)? != b"\x7fELF" || *d.get(5)? != 1 {
        return None;
    }
    let is64 = *d.get(4)? == 2;
    let u16_at = |o: usize| Some(u16::from_le_bytes(d.get(o..o + 2)?.try_into().ok()?) as u64);
    let u32_at = |o: usize| Some(u32::from_le_bytes(d.get(o..o + 4)?.try_into().ok()?) as u64);
    let u64_at = |o: usize| Some(u64::from_le_bytes(d.get(o..o + 8)?.try_into().ok()?));
    let word = |o: usize| if is64 { u64_at(o) } else { u32_at(o) };
    let (shoff, shentsize, shnum, shstrndx) = if is64 {
        (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?, u16_at(0x3e)?)
    } else {
        (u32_at(0x20)?, u16_at(0x2e)?, u16_at(0x30)?, u16_at(0x32)?)
    };
    let header = |i: u64| (shoff + i * shentsize) as usize;
    // Offsets inside a section header: name, type, flags, offset, size.
    let (o_type, o_flags, o_offset, o_size) = if is64 {
        (4, 8, 0x18, 0x20)
    } else {
        (4, 8, 0x10, 0x14)
    };
    let strtab = word(header(shstrndx) + o_offset)? as usize;
    let mut out = Vec::new();
    for i in 0..shnum {
        let h = header(i);
        let name_off = strtab + u32_at(h)? as usize;
        let end = d.get(name_off..)?.iter().position(|&c| c == 0)? + name_off;
        let flags = word(h + o_flags)?;
        out.push(Section {
            name: String::from_utf8_lossy(&d[name_off..end]).into_owned(),
            size: word(h + o_size)?,
            alloc: flags & 0x2 != 0,
            write: flags & 0x1 != 0,
            nobits: u32_at(h + o_type)? == 8,
        });
    }
    Some(out)
}
