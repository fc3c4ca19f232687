//! Zip differential: ckpt's zip layer against a second, independent model of miniz's reader
//! (written here step by step from miniz's reading procedure: 4 KiB blocks searched backwards
//! for the end record, the zip64 locator, the per-entry checks). Both must accept the same files
//! and list the same records at the same data offsets. Then the readers' policy: when ckpt's
//! reader opens the archive, no other reading may show different records, and `scan` must not
//! call an archive safe that holds a pickle it did not judge.
#![no_main]
use libfuzzer_sys::fuzz_target;

use ckpt::container::zip as czip;
use ckpt::container::zip_readings;

#[path = "common.rs"]
mod common;

fn rd16(b: &[u8], at: u64) -> Option<u64> {
    let at = usize::try_from(at).ok()?;
    b.get(at..at.checked_add(2)?).map(|s| u64::from(u16::from_le_bytes([s[0], s[1]])))
}

fn rd32(b: &[u8], at: u64) -> Option<u64> {
    let at = usize::try_from(at).ok()?;
    b.get(at..at.checked_add(4)?).map(|s| u64::from(u32::from_le_bytes([s[0], s[1], s[2], s[3]])))
}

fn rd64(b: &[u8], at: u64) -> Option<u64> {
    Some(rd32(b, at)? | rd32(b, at.checked_add(4)?)? << 32)
}

/// (name, method, data start, compressed size, size) per entry, or None where miniz fails.
type Listing = Vec<(Vec<u8>, u64, Option<u64>, u64, u64)>;

/// The oracle: miniz's `mz_zip_reader_read_central_dir` + `mz_zip_reader_file_stat`.
fn oracle(b: &[u8]) -> Option<Listing> {
    let size = b.len() as i64;
    if size < 22 {
        return None;
    }
    let mut cur = (size - 4096).max(0);
    let eocd = loop {
        let n = (4096).min(size - cur);
        let hit = (0..=n - 4)
            .rev()
            .find(|&i| rd32(b, (cur + i) as u64) == Some(0x0605_4b50) && size - (cur + i) >= 22);
        if let Some(i) = hit {
            break (cur + i) as u64;
        }
        if cur == 0 || size - cur >= 0xffff + 22 {
            return None;
        }
        cur = (cur - 4093).max(0);
    };
    let mut total = rd16(b, eocd + 10)?;
    let mut on_disk = rd16(b, eocd + 8)?;
    let mut this_disk = rd16(b, eocd + 4)?;
    let mut cd_disk = rd16(b, eocd + 6)?;
    let mut cd_size = rd32(b, eocd + 12)?;
    let mut cd_ofs = rd32(b, eocd + 16)?;
    if eocd >= 76 && rd32(b, eocd - 20) == Some(0x0706_4b50) {
        let z = rd64(b, eocd - 12)?;
        if z > size as u64 - 56 {
            return None;
        }
        if rd32(b, z) == Some(0x0606_4b50) {
            if rd64(b, z + 4)? < 44 || rd32(b, eocd - 4)? != 1 {
                return None;
            }
            total = rd64(b, z + 32)?;
            on_disk = rd64(b, z + 24)?;
            if total > u64::from(u32::MAX) || on_disk > u64::from(u32::MAX) || rd64(b, z + 40)? > u64::from(u32::MAX) {
                return None;
            }
            cd_size = rd64(b, z + 40)?;
            this_disk = rd32(b, z + 16)?;
            cd_disk = rd32(b, z + 20)?;
            cd_ofs = rd64(b, z + 48)?;
        }
    }
    if total != on_disk || ((this_disk | cd_disk) != 0 && (this_disk != 1 || cd_disk != 1)) {
        return None;
    }
    if cd_size < u64::from((total as u32).wrapping_mul(46)) || cd_ofs.checked_add(cd_size)? > size as u64 {
        return None;
    }
    let mut out = Vec::new();
    let mut p = cd_ofs;
    let mut left = cd_size;
    for _ in 0..total {
        if left < 46 || rd32(b, p)? != 0x0201_4b50 {
            return None;
        }
        let (mut comp, mut dec, mut loc) = (rd32(b, p + 20)?, rd32(b, p + 24)?, rd32(b, p + 42)?);
        let method = rd16(b, p + 10)?;
        let (nl, el, cl) = (rd16(b, p + 28)?, rd16(b, p + 30)?, rd16(b, p + 32)?);
        if comp != 0xffff_ffff && dec != 0xffff_ffff && ((rd32(b, p + 10)? == 0 && dec != comp) || (dec != 0 && comp == 0)) {
            return None;
        }
        let disk = rd16(b, p + 34)?;
        if disk == 0xffff || (disk != this_disk && disk != 1) {
            return None;
        }
        if comp != 0xffff_ffff && loc + 30 + comp > size as u64 {
            return None;
        }
        if rd16(b, p + 8)? & 0x2000 != 0 || 46 + nl + el + cl > left {
            return None;
        }
        if comp.max(dec).max(loc) == 0xffff_ffff {
            let mut x = p + 46 + nl;
            let mut rem = el;
            while rem > 0 {
                if rem < 4 {
                    return None;
                }
                let (id, len) = (rd16(b, x)?, rd16(b, x + 2)?);
                if len + 4 > rem {
                    return None;
                }
                if id == 1 {
                    let mut f = x + 4;
                    let mut flen = len;
                    for v in [&mut dec, &mut comp, &mut loc] {
                        if *v == 0xffff_ffff {
                            if flen < 8 {
                                return None;
                            }
                            *v = rd64(b, f)?;
                            f += 8;
                            flen -= 8;
                        }
                    }
                    break;
                }
                x += 4 + len;
                rem -= 4 + len;
            }
        }
        let name = b.get(usize::try_from(p + 46).ok()?..usize::try_from(p + 46 + nl).ok()?)?.to_vec();
        let start = (rd32(b, loc) == Some(0x0403_4b50))
            .then(|| Some(loc + 30 + rd16(b, loc + 26)? + rd16(b, loc + 28)?))
            .flatten();
        out.push((name, method, start, comp, dec));
        p += 46 + nl + el + cl;
        left -= 46 + nl + el + cl;
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let mine = czip::read_directory(data).ok().map(|dir| {
        dir.entries
            .iter()
            .map(|e| (e.name.clone(), u64::from(e.method), e.data_start(data), e.compressed_size, e.size))
            .collect::<Listing>()
    });
    assert_eq!(mine, oracle(data), "ckpt and the miniz model read different directories");
    let path = common::write_input("model.pth", data);
    if let (Ok(_), Ok(dir)) = (ckpt::read::open(&path), czip::read_directory(data)) {
        let others = zip_readings::other_readings(data, &dir);
        assert!(others.is_empty(), "read an archive another reader sees differently: {}", others[0].how);
    }
    let _ = ckpt::scan::scan_path(&path, &ckpt::read::ReadLimits::default());
});
