// NVMe command and completion layouts as NVMe over Fabrics carries them: the 64-byte submission
// queue entry (SQE), the 16-byte completion queue entry (CQE), SGL descriptors, status codes,
// Fabrics commands (Connect, Property Get/Set) and the admin/NVM commands nvqos speaks.
//
// Builders (make_*) are for initiators; parsers (parse_*) are for controllers. Field names follow
// the NVMe Base and NVMe-oF specifications; "0's based" values are converted at the API boundary
// only where the name says so (e.g. nlb in RwCommand is a block COUNT).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace nvqos::nvmf {

inline constexpr std::size_t kSqeSize = 64;
inline constexpr std::size_t kCqeSize = 16;
inline constexpr std::size_t kIdentifySize = 4096;
inline constexpr std::size_t kConnectDataSize = 1024;
inline constexpr std::size_t kNqnFieldSize = 256;  // SUBNQN / HOSTNQN fields, NUL-terminated

// ---- SGL descriptors (NVMe Base 4.3.2) -------------------------------------------------------
// Byte 15 of a descriptor: descriptor type in bits 7:4, subtype in bits 3:0.
inline constexpr std::uint8_t kSglDataBlockOffset = 0x01;     // Data Block, Offset: in-capsule data
inline constexpr std::uint8_t kSglTransportDataBlock = 0x5a;  // Transport SGL Data Block, subtype A:
                                                              // data moved by R2T/H2CData or C2HData
struct SglDescriptor {
  std::uint64_t address = 0;  // for in-capsule data: offset from the start of the in-capsule data
  std::uint32_t length = 0;
  std::uint8_t type = 0;  // kSglDataBlockOffset, kSglTransportDataBlock, ...

  bool in_capsule() const { return type == kSglDataBlockOffset; }
  bool transport() const { return type == kSglTransportDataBlock; }
  friend bool operator==(const SglDescriptor&, const SglDescriptor&) = default;
};

SglDescriptor sgl_in_capsule(std::uint32_t length);   // in-capsule data at offset 0
SglDescriptor sgl_transport(std::uint32_t length);    // data moved by the transport (0 = no data)

// ---- Submission queue entry -------------------------------------------------------------------
inline constexpr std::uint8_t kSqeFlagPsdtSgl = 0x40;  // PSDT = 01b: SGL for data, as NVMe/TCP requires

struct Sqe {
  std::uint8_t opcode = 0;
  std::uint8_t flags = kSqeFlagPsdtSgl;  // FUSE bits 1:0, PSDT bits 7:6
  std::uint16_t cid = 0;
  std::uint32_t nsid = 0;  // Fabrics commands (opcode 0x7f): bits 7:0 are FCTYPE
  std::uint32_t cdw2 = 0;
  std::uint32_t cdw3 = 0;
  std::uint64_t mptr = 0;
  SglDescriptor sgl1;  // DPTR
  std::uint32_t cdw10 = 0, cdw11 = 0, cdw12 = 0, cdw13 = 0, cdw14 = 0, cdw15 = 0;

  bool is_fabrics() const;
  std::uint8_t fctype() const { return static_cast<std::uint8_t>(nsid & 0xff); }

  void encode(std::span<std::uint8_t, kSqeSize> out) const;
  static Sqe decode(std::span<const std::uint8_t, kSqeSize> in);
  friend bool operator==(const Sqe&, const Sqe&) = default;
};

// ---- Status field (CQE DW3 bits 31:17; stored here without the phase bit, Linux layout) --------
// bits 7:0 SC, 10:8 SCT, 12:11 CRD, 13 More, 14 DNR.
using Status = std::uint16_t;

enum class StatusCodeType : std::uint8_t {
  generic = 0,
  command_specific = 1,
  media = 2,
  path = 3,
  vendor = 7,
};

namespace status {
inline constexpr Status kDnr = 0x4000;
inline constexpr Status kMore = 0x2000;

// Generic command status (SCT 0)
inline constexpr Status kSuccess = 0x000;
inline constexpr Status kInvalidOpcode = 0x001;
inline constexpr Status kInvalidField = 0x002;
inline constexpr Status kCommandIdConflict = 0x003;
inline constexpr Status kDataTransferError = 0x004;
inline constexpr Status kInternalError = 0x006;
inline constexpr Status kAbortRequested = 0x007;
inline constexpr Status kAbortSqDeleted = 0x008;
inline constexpr Status kInvalidNamespace = 0x00b;       // Invalid Namespace or Format
inline constexpr Status kCommandSequenceError = 0x00c;
inline constexpr Status kSglInvalidLast = 0x00d;
inline constexpr Status kSglInvalidCount = 0x00e;
inline constexpr Status kSglInvalidDataLength = 0x00f;   // Data SGL Length Invalid
inline constexpr Status kSglInvalidType = 0x011;         // SGL Descriptor Type Invalid
inline constexpr Status kSglInvalidOffset = 0x016;
inline constexpr Status kHostIdInconsistent = 0x018;
inline constexpr Status kKeepAliveExpired = 0x019;
inline constexpr Status kTransientTransportError = 0x022;
inline constexpr Status kLbaOutOfRange = 0x080;          // NVM command set
inline constexpr Status kCapacityExceeded = 0x081;
inline constexpr Status kNamespaceNotReady = 0x082;

// Command specific status (SCT 1)
inline constexpr Status kInvalidQueueId = 0x101;
inline constexpr Status kInvalidQueueSize = 0x102;
inline constexpr Status kAsyncEventLimitExceeded = 0x105;
inline constexpr Status kInvalidLogPage = 0x109;
inline constexpr Status kFeatureNotSaveable = 0x10d;
inline constexpr Status kFeatureNotChangeable = 0x10e;

// Fabrics command specific status (SCT 1, NVMe-oF 1.1 figure "Connect command status values")
inline constexpr Status kConnectIncompatibleFormat = 0x180;
inline constexpr Status kConnectControllerBusy = 0x181;
inline constexpr Status kConnectInvalidParameters = 0x182;
inline constexpr Status kConnectRestartDiscovery = 0x183;
inline constexpr Status kConnectInvalidHost = 0x184;
inline constexpr Status kDiscoveryRestart = 0x190;
inline constexpr Status kAuthRequired = 0x191;
}  // namespace status

constexpr Status make_status(StatusCodeType sct, std::uint8_t sc, bool dnr = false) {
  return static_cast<Status>((static_cast<unsigned>(sct) << 8) | sc | (dnr ? status::kDnr : 0));
}
constexpr std::uint8_t status_sc(Status s) { return static_cast<std::uint8_t>(s & 0xff); }
constexpr StatusCodeType status_sct(Status s) { return static_cast<StatusCodeType>((s >> 8) & 0x7); }
constexpr bool status_dnr(Status s) { return (s & status::kDnr) != 0; }
// The status without CRD/More/DNR, comparable with the status:: constants.
constexpr Status status_code(Status s) { return static_cast<Status>(s & 0x7ff); }
// "Invalid Field in Command (SCT 0h SC 02h) DNR" style text for logs.
std::string status_to_string(Status s);

// ---- Completion queue entry --------------------------------------------------------------------
struct Cqe {
  std::uint32_t dw0 = 0;  // command specific (Connect: CNTLID; Property Get: value low)
  std::uint32_t dw1 = 0;  // command specific (Property Get: value high)
  std::uint16_t sqhd = 0;
  std::uint16_t sqid = 0;
  std::uint16_t cid = 0;
  Status status = 0;
  bool phase = false;  // always 0 on fabrics

  bool ok() const { return status_code(status) == status::kSuccess; }
  void encode(std::span<std::uint8_t, kCqeSize> out) const;
  static Cqe decode(std::span<const std::uint8_t, kCqeSize> in);
  friend bool operator==(const Cqe&, const Cqe&) = default;
};

// ---- Opcodes ------------------------------------------------------------------------------------
namespace admin_opcode {
inline constexpr std::uint8_t kDeleteIoSq = 0x00;
inline constexpr std::uint8_t kCreateIoSq = 0x01;
inline constexpr std::uint8_t kGetLogPage = 0x02;
inline constexpr std::uint8_t kDeleteIoCq = 0x04;
inline constexpr std::uint8_t kCreateIoCq = 0x05;
inline constexpr std::uint8_t kIdentify = 0x06;
inline constexpr std::uint8_t kAbort = 0x08;
inline constexpr std::uint8_t kSetFeatures = 0x09;
inline constexpr std::uint8_t kGetFeatures = 0x0a;
inline constexpr std::uint8_t kAsyncEventRequest = 0x0c;
inline constexpr std::uint8_t kKeepAlive = 0x18;
}  // namespace admin_opcode

namespace nvm_opcode {
inline constexpr std::uint8_t kFlush = 0x00;
inline constexpr std::uint8_t kWrite = 0x01;
inline constexpr std::uint8_t kRead = 0x02;
inline constexpr std::uint8_t kWriteZeroes = 0x08;
inline constexpr std::uint8_t kDatasetManagement = 0x09;
}  // namespace nvm_opcode

inline constexpr std::uint8_t kFabricsOpcode = 0x7f;
namespace fabrics_type {
inline constexpr std::uint8_t kPropertySet = 0x00;
inline constexpr std::uint8_t kConnect = 0x01;
inline constexpr std::uint8_t kPropertyGet = 0x04;
inline constexpr std::uint8_t kAuthenticationSend = 0x05;
inline constexpr std::uint8_t kAuthenticationReceive = 0x06;
inline constexpr std::uint8_t kDisconnect = 0x08;
}  // namespace fabrics_type

// Human-readable command name for logs ("Read", "Fabrics Connect", "Identify", ...).
std::string_view command_name(const Sqe& sqe, bool admin_queue);

// ---- Fabrics: Connect ---------------------------------------------------------------------------
struct ConnectCommand {
  std::uint16_t recfmt = 0;
  std::uint16_t qid = 0;     // 0 = admin queue
  std::uint16_t sqsize = 0;  // 0's based queue size
  std::uint8_t cattr = 0;
  std::uint32_t kato_ms = 0;  // keep alive timeout (admin queue only)
};

struct ConnectData {
  std::array<std::uint8_t, 16> hostid{};
  std::uint16_t cntlid = 0xffff;  // admin queue: 0xffff = dynamic controller; I/O queue: the admin's
  std::string subnqn;
  std::string hostnqn;

  void encode(std::span<std::uint8_t, kConnectDataSize> out) const;
  static ConnectData decode(std::span<const std::uint8_t, kConnectDataSize> in);
};
// Byte offsets within the Connect data, reported in IPO by Connect Invalid Parameters.
inline constexpr std::uint16_t kConnectDataCntlidOffset = 16;
inline constexpr std::uint16_t kConnectDataSubnqnOffset = 256;
inline constexpr std::uint16_t kConnectDataHostnqnOffset = 512;

// Connect with its 1024-byte data in the capsule.
Sqe make_connect(std::uint16_t cid, const ConnectCommand& cmd);
ConnectCommand parse_connect(const Sqe& sqe);

// Connect response DW0: CNTLID on success; on Connect Invalid Parameters the offset of the bad
// parameter (IPO) and whether it is in the data (IATTR bit 0 = 1) or in the SQE.
std::uint32_t connect_success_dw0(std::uint16_t cntlid);
std::uint32_t connect_invalid_param_dw0(std::uint16_t ipo, bool in_data);
struct ConnectInvalidParam {
  std::uint16_t ipo;
  bool in_data;
};
ConnectInvalidParam parse_connect_invalid_param(std::uint32_t dw0);

// ---- Fabrics: Property Get/Set (controller registers) ------------------------------------------
namespace property {
inline constexpr std::uint32_t kCap = 0x00;   // 8 bytes
inline constexpr std::uint32_t kVs = 0x08;    // 4 bytes
inline constexpr std::uint32_t kCc = 0x14;    // 4 bytes
inline constexpr std::uint32_t kCsts = 0x1c;  // 4 bytes
inline constexpr std::uint32_t kNssr = 0x20;  // 4 bytes

inline constexpr std::uint32_t kCcEnable = 0x1;
inline constexpr std::uint32_t kCcShnMask = 0x3u << 14;
inline constexpr std::uint32_t kCstsReady = 0x1;
inline constexpr std::uint32_t kCstsFatal = 0x2;
inline constexpr std::uint32_t kCstsShstComplete = 0x2u << 2;
}  // namespace property

struct PropertyCommand {
  bool set = false;
  std::uint8_t size = 4;  // 4 or 8 bytes
  std::uint32_t offset = 0;
  std::uint64_t value = 0;  // Property Set only
};
Sqe make_property_get(std::uint16_t cid, std::uint32_t offset, std::uint8_t size);
Sqe make_property_set(std::uint16_t cid, std::uint32_t offset, std::uint64_t value, std::uint8_t size);
PropertyCommand parse_property(const Sqe& sqe);  // Property Get or Set
// Property Get returns the value in CQE DW0 (low) and DW1 (high).
inline std::uint64_t property_value(const Cqe& cqe) {
  return cqe.dw0 | (static_cast<std::uint64_t>(cqe.dw1) << 32);
}

// ---- Admin: Identify ---------------------------------------------------------------------------
namespace cns {
inline constexpr std::uint8_t kNamespace = 0x00;
inline constexpr std::uint8_t kController = 0x01;
inline constexpr std::uint8_t kActiveNamespaces = 0x02;
inline constexpr std::uint8_t kNamespaceDescriptors = 0x03;
}  // namespace cns

struct IdentifyCommand {
  std::uint8_t cns = 0;
  std::uint16_t cntid = 0;
  std::uint32_t nsid = 0;
};
Sqe make_identify(std::uint16_t cid, std::uint8_t cns, std::uint32_t nsid = 0);
IdentifyCommand parse_identify(const Sqe& sqe);

// The subset of the Identify Controller data structure nvqos fills and reads.
struct IdentifyController {
  std::uint16_t vid = 0;
  std::uint16_t ssvid = 0;
  std::string serial;     // SN, 20 ASCII, space padded
  std::string model;      // MN, 40 ASCII
  std::string firmware;   // FR, 8 ASCII
  std::uint8_t mdts = 0;  // max data transfer, 2^mdts * 4 KiB; 0 = no limit
  std::uint16_t cntlid = 0;
  std::uint32_t ver = 0x00010400;  // NVMe 1.4
  std::uint32_t oaes = 0;
  std::uint32_t ctratt = 0;
  std::uint8_t aerl = 3;  // 0's based
  std::uint8_t lpa = 0;
  std::uint8_t elpe = 0;
  std::uint16_t kas = 0;  // keep alive granularity, 100 ms units
  std::uint8_t sqes = 0x66;
  std::uint8_t cqes = 0x44;
  std::uint16_t maxcmd = 0;
  std::uint32_t nn = 0;  // number of namespaces (highest NSID)
  std::uint16_t oncs = 0;
  std::uint8_t vwc = 0;
  std::uint32_t sgls = 0;
  std::string subnqn;
  // Fabrics specific
  std::uint32_t ioccsz = 4;  // I/O command capsule size in 16-byte units (64 B SQE + in-capsule data)
  std::uint32_t iorcsz = 1;  // I/O response capsule size in 16-byte units
  std::uint16_t icdoff = 0;
  std::uint8_t fcatt = 0;
  std::uint8_t msdbd = 1;
  std::uint8_t cntrltype = 1;  // 1 = I/O controller, 2 = discovery controller

  std::uint32_t in_capsule_data_size() const { return ioccsz * 16 > 64 ? ioccsz * 16 - 64 : 0; }
  void encode(std::span<std::uint8_t, kIdentifySize> out) const;
  static IdentifyController decode(std::span<const std::uint8_t, kIdentifySize> in);
};
// Byte offsets of Identify Controller fields used by the codec and its tests.
inline constexpr std::size_t kIdCtrlIoccszOffset = 1792;
inline constexpr std::size_t kIdCtrlSubnqnOffset = 768;

struct IdentifyNamespace {
  std::uint64_t nsze = 0;  // size in logical blocks
  std::uint64_t ncap = 0;
  std::uint64_t nuse = 0;
  std::uint8_t nsfeat = 0;
  std::uint8_t nlbaf = 0;  // 0's based number of LBA formats
  std::uint8_t flbas = 0;
  std::array<std::uint8_t, 16> nguid{};
  std::array<std::uint8_t, 8> eui64{};
  std::uint8_t lbads = 9;  // LBA format 0: log2(block size)

  std::uint32_t block_size() const { return 1u << lbads; }
  void encode(std::span<std::uint8_t, kIdentifySize> out) const;
  static IdentifyNamespace decode(std::span<const std::uint8_t, kIdentifySize> in);
};

// CNS 02h: up to 1024 NSIDs greater than the command's NSID, ascending, zero-terminated.
void encode_active_namespace_list(std::span<const std::uint32_t> nsids,
                                  std::span<std::uint8_t, kIdentifySize> out);
std::size_t decode_active_namespace_list(std::span<const std::uint8_t, kIdentifySize> in,
                                         std::span<std::uint32_t> out);

// ---- Admin: features, keep alive, AER, log page -------------------------------------------------
namespace feature {
inline constexpr std::uint8_t kArbitration = 0x01;
inline constexpr std::uint8_t kPowerManagement = 0x02;
inline constexpr std::uint8_t kTemperatureThreshold = 0x04;
inline constexpr std::uint8_t kVolatileWriteCache = 0x06;
inline constexpr std::uint8_t kNumberOfQueues = 0x07;
inline constexpr std::uint8_t kInterruptCoalescing = 0x08;
inline constexpr std::uint8_t kAsyncEventConfig = 0x0b;
inline constexpr std::uint8_t kKeepAliveTimer = 0x0f;
}  // namespace feature

struct FeaturesCommand {
  std::uint8_t fid = 0;
  bool save = false;         // Set Features SV
  std::uint8_t select = 0;   // Get Features SEL
  std::uint32_t cdw11 = 0;
};
Sqe make_set_features(std::uint16_t cid, std::uint8_t fid, std::uint32_t cdw11);
Sqe make_get_features(std::uint16_t cid, std::uint8_t fid);
FeaturesCommand parse_features(const Sqe& sqe);
// Number of Queues: requested/allocated counts are 0's based in the wire format; these take and
// return plain counts (number of I/O submission / completion queues).
Sqe make_set_number_of_queues(std::uint16_t cid, std::uint16_t sq_count, std::uint16_t cq_count);
std::uint32_t number_of_queues_dw(std::uint16_t sq_count, std::uint16_t cq_count);
struct QueueCounts {
  std::uint16_t sq_count;
  std::uint16_t cq_count;
};
QueueCounts parse_number_of_queues(std::uint32_t dw);  // from CDW11 or completion DW0

Sqe make_keep_alive(std::uint16_t cid);
Sqe make_async_event_request(std::uint16_t cid);

struct GetLogPageCommand {
  std::uint8_t lid = 0;
  std::uint32_t numd = 0;  // number of dwords (converted from the 0's based NUMDL/NUMDU)
  std::uint64_t offset = 0;
  std::uint32_t bytes() const { return numd * 4; }
};
Sqe make_get_log_page(std::uint16_t cid, std::uint8_t lid, std::uint32_t bytes, std::uint64_t offset = 0,
                      std::uint32_t nsid = 0xffffffffu);
GetLogPageCommand parse_get_log_page(const Sqe& sqe);

// ---- Discovery (NVMe-oF: the discovery controller and its log page 70h) ------------------------
inline constexpr std::string_view kDiscoveryNqn = "nqn.2014-08.org.nvmexpress.discovery";
inline constexpr std::uint8_t kLogDiscovery = 0x70;
inline constexpr std::uint8_t kCntrltypeDiscovery = 2;  // Identify Controller CNTRLTYPE (byte 111)
inline constexpr std::size_t kDiscoveryLogHeaderSize = 1024;
inline constexpr std::size_t kDiscoveryLogEntrySize = 1024;

struct DiscoveryLogEntry {
  std::uint8_t trtype = 3;   // 3 = TCP
  std::uint8_t adrfam = 1;   // 1 = IPv4, 2 = IPv6
  std::uint8_t subtype = 2;  // 2 = NVM subsystem, 3 = current discovery subsystem
  std::uint8_t treq = 0;
  std::uint16_t portid = 0;
  std::uint16_t cntlid = 0xffff;
  std::uint16_t asqsz = 32;
  std::string trsvcid;  // port, e.g. "4420"
  std::string subnqn;
  std::string traddr;   // e.g. "127.0.0.1"
  std::uint8_t sectype = 0;  // TSAS for TCP: 0 = no security
};
// The whole log page: header (GENCTR, NUMREC, RECFMT 0) and one 1024-byte record per entry.
std::vector<std::uint8_t> encode_discovery_log(std::uint64_t genctr, std::span<const DiscoveryLogEntry> entries);
struct DiscoveryLog {
  std::uint64_t genctr = 0;
  std::uint64_t numrec = 0;
  std::vector<DiscoveryLogEntry> entries;  // as many as `bytes` holds
};
DiscoveryLog decode_discovery_log(std::span<const std::uint8_t> bytes);

// ---- NVM: Read / Write / Flush ------------------------------------------------------------------
struct RwCommand {
  std::uint64_t slba = 0;
  std::uint32_t nlb = 0;  // number of logical blocks (a count; the wire holds it 0's based)
};
// `data_len` is nlb * block size; Write data is in the capsule when `in_capsule`, else by R2T.
Sqe make_read(std::uint16_t cid, std::uint32_t nsid, std::uint64_t slba, std::uint32_t nlb,
              std::uint32_t data_len);
Sqe make_write(std::uint16_t cid, std::uint32_t nsid, std::uint64_t slba, std::uint32_t nlb,
               std::uint32_t data_len, bool in_capsule);
Sqe make_flush(std::uint16_t cid, std::uint32_t nsid);
RwCommand parse_rw(const Sqe& sqe);

}  // namespace nvqos::nvmf
