//! The few facts about this kernel's own structures the probe needs (member offsets, enum
//! values), read from the kernel's BTF (/sys/kernel/btf/vmlinux). The probe has no CO-RE
//! relocations: these are written into it as constants before it is loaded.

use wakuprof_probe_common::KernelLayout;

use crate::Error;

/// Where the kernel describes its types.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_ENUM64: u32 = 19;
/// Kinds that only qualify or name another type (typedef, volatile, const, restrict, type tag).
const QUALIFIERS: [u32; 5] = [8, 9, 10, 11, 18];

/// A parsed BTF blob: the position of each type record, by type id.
pub struct KernelBtf {
    data: Vec<u8>,
    /// Byte position of type id `i + 1`'s record.
    types: Vec<usize>,
    strings: std::ops::Range<usize>,
}

/// One type record's fixed part.
struct Record {
    name: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    /// Size, or the type it refers to.
    size_or_type: u32,
    /// Position of what follows the fixed part (members, enumerators).
    rest: usize,
}

impl KernelBtf {
    /// Reads the running kernel's BTF.
    pub fn read() -> Result<KernelBtf, Error> {
        let data = std::fs::read(VMLINUX).map_err(|e| Error::io(VMLINUX, e))?;
        KernelBtf::parse(data).map_err(|why| Error::Probe(format!("{VMLINUX}: {why}")))
    }

    /// Indexes a BTF blob (native byte order, as the kernel writes it).
    pub fn parse(data: Vec<u8>) -> Result<KernelBtf, &'static str> {
        let u32_at = |at: usize| -> Result<usize, &'static str> {
            read_u32(&data, at)
                .map(|v| v as usize)
                .ok_or("truncated header")
        };
        if data.get(..2).map(|m| u16::from_ne_bytes([m[0], m[1]])) != Some(MAGIC) {
            return Err("not BTF (bad magic)");
        }
        let header = u32_at(4)?.max(HEADER_LEN);
        let (type_off, type_len) = (u32_at(8)?, u32_at(12)?);
        let (str_off, str_len) = (u32_at(16)?, u32_at(20)?);
        let types_at = header + type_off;
        let strings = header + str_off..header + str_off + str_len;
        if types_at + type_len > data.len() || strings.end > data.len() {
            return Err("sections past the end");
        }
        let mut btf = KernelBtf {
            data,
            types: Vec::new(),
            strings,
        };
        let mut at = types_at;
        while at < types_at + type_len {
            let r = btf.record(at).ok_or("truncated type record")?;
            btf.types.push(at);
            at = r.rest + trailing_len(r.kind, r.vlen).ok_or("unknown type kind")?;
        }
        Ok(btf)
    }

    /// This kernel's [`KernelLayout`]; names what is missing when the BTF lacks it.
    pub fn layout(&self) -> Result<KernelLayout, String> {
        let member = |s: &str, m: &str| {
            self.member_offset(s, m)
                .ok_or_else(|| format!("no member {m} in struct {s}"))
        };
        let bit = |name: &str| {
            self.enumerator(name)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| format!("no enumerator {name}"))
        };
        Ok(KernelLayout {
            sock_dst: member("sock", "sk_dst_cache")?,
            dst_dev: member("dst_entry", "dev")?,
            dev_features: member("net_device", "features")?,
            dev_ifindex: member("net_device", "ifindex")?,
            dev_gso_max_size: member("net_device", "gso_max_size")?,
            // Kernels before 6.3 hold one limit for both families.
            dev_gso_ipv4_max_size: member("net_device", "gso_ipv4_max_size")
                .or_else(|_| member("net_device", "gso_max_size"))?,
            dev_gso_max_segs: member("net_device", "gso_max_segs")?,
            dev_hard_header_len: member("net_device", "hard_header_len")?,
            tso_bit: bit("NETIF_F_TSO_BIT")?,
            tso6_bit: bit("NETIF_F_TSO6_BIT")?,
            udp_bit: bit("NETIF_F_GSO_UDP_L4_BIT")?,
            _pad: 0,
        })
    }

    /// Byte offset of `member` in the struct named `name`, looking into anonymous structs and
    /// unions.
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        let id = (1..=self.types.len() as u32).find(|&id| {
            self.record_of(id).is_some_and(|r| {
                r.kind == KIND_STRUCT && r.vlen > 0 && self.name(r.name) == Some(name)
            })
        })?;
        self.member_bits(id, member).map(|bits| bits / 8)
    }

    /// Value of the enumerator `name` in any enum.
    pub fn enumerator(&self, name: &str) -> Option<i64> {
        self.types.iter().find_map(|&at| {
            let r = self.record(at)?;
            let width = match r.kind {
                KIND_ENUM => 8,
                KIND_ENUM64 => 12,
                _ => return None,
            };
            let e = (0..r.vlen)
                .map(|i| r.rest + i * width)
                .find(|&e| read_u32(&self.data, e).and_then(|n| self.name(n)) == Some(name))?;
            let lo = read_u32(&self.data, e + 4)?;
            Some(if r.kind == KIND_ENUM {
                i64::from(lo as i32)
            } else {
                (u64::from(read_u32(&self.data, e + 8)?) << 32 | u64::from(lo)) as i64
            })
        })
    }

    /// Bit offset of `member` in struct or union `id`, through anonymous members.
    fn member_bits(&self, id: u32, member: &str) -> Option<u32> {
        let r = self.record_of(id)?;
        if r.kind != KIND_STRUCT && r.kind != KIND_UNION {
            return None;
        }
        (0..r.vlen).find_map(|i| {
            let at = r.rest + i * 12;
            let (name, ty, offset) = (
                read_u32(&self.data, at)?,
                read_u32(&self.data, at + 4)?,
                read_u32(&self.data, at + 8)?,
            );
            let bits = if r.kind_flag {
                offset & 0x00ff_ffff
            } else {
                offset
            };
            if name == 0 {
                self.member_bits(self.unqualified(ty)?, member)
                    .map(|inner| bits + inner)
            } else {
                (self.name(name) == Some(member)).then_some(bits)
            }
        })
    }

    /// The type `id` names once typedefs and qualifiers are peeled off.
    fn unqualified(&self, mut id: u32) -> Option<u32> {
        for _ in 0..32 {
            let r = self.record_of(id)?;
            if !QUALIFIERS.contains(&r.kind) {
                return Some(id);
            }
            id = r.size_or_type;
        }
        None
    }

    fn record_of(&self, id: u32) -> Option<Record> {
        let at = *self.types.get(usize::try_from(id).ok()?.checked_sub(1)?)?;
        self.record(at)
    }

    fn record(&self, at: usize) -> Option<Record> {
        let info = read_u32(&self.data, at + 4)?;
        Some(Record {
            name: read_u32(&self.data, at)?,
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            size_or_type: read_u32(&self.data, at + 8)?,
            rest: at + 12,
        })
    }

    fn name(&self, offset: u32) -> Option<&str> {
        let start = self.strings.start + offset as usize;
        let bytes = self.data.get(start..self.strings.end)?;
        let end = bytes.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&bytes[..end]).ok()
    }
}

/// Bytes that follow a type record's fixed part, by kind.
fn trailing_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        // int, var, decl tag
        1 | 14 | 17 => 4,
        // ptr, fwd, typedef, volatile, const, restrict, func, float, type tag
        2 | 7..=12 | 16 | 18 => 0,
        // array
        3 => 12,
        // struct, union, datasec, enum64
        4 | 5 | 15 | 19 => 12 * vlen,
        // enum, func proto
        6 | 13 => 8 * vlen,
        _ => return None,
    })
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF, where it has one.
    fn kernel() -> Option<KernelBtf> {
        std::path::Path::new(VMLINUX)
            .exists()
            .then(|| KernelBtf::read().expect("the kernel's BTF parses"))
    }

    #[test]
    fn finds_the_layout_the_probe_needs() {
        let Some(btf) = kernel() else { return };
        let layout = btf.layout().expect("every member and enumerator is found");
        // Stable since the bits were numbered: TSO is GSO type TCPV4 (bit 0) past the shift of 16.
        assert_eq!(layout.tso_bit, 16);
        assert!(layout.tso6_bit > layout.tso_bit && layout.udp_bit > layout.tso_bit);
        assert!(layout.sock_dst > 0 && layout.dst_dev < 256 && layout.dev_features > 0);
        assert_ne!(layout.dev_features, layout.dev_ifindex);
    }

    #[test]
    fn rejects_what_is_not_btf() {
        assert!(KernelBtf::parse(b"not btf at all, not at all".to_vec()).is_err());
        assert!(KernelBtf::parse(Vec::new()).is_err());
        let mut truncated = MAGIC.to_ne_bytes().to_vec();
        truncated.extend_from_slice(&[1, 0, 24, 0, 0, 0]);
        assert!(KernelBtf::parse(truncated).is_err());
    }
}
