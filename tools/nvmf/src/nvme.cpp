#include "nvqos/nvmf/nvme.h"

#include <cstdio>
#include <cstring>

#include "bytes.h"

namespace nvqos::nvmf {

using namespace wire;

SglDescriptor sgl_in_capsule(std::uint32_t length) { return {0, length, kSglDataBlockOffset}; }
SglDescriptor sgl_transport(std::uint32_t length) { return {0, length, kSglTransportDataBlock}; }

// ---- SQE / CQE ------------------------------------------------------------------------------------

bool Sqe::is_fabrics() const { return opcode == kFabricsOpcode; }

void Sqe::encode(std::span<std::uint8_t, kSqeSize> out) const {
  std::uint8_t* p = out.data();
  std::memset(p, 0, kSqeSize);
  p[0] = opcode;
  p[1] = flags;
  put16(p + 2, cid);
  put32(p + 4, nsid);
  put32(p + 8, cdw2);
  put32(p + 12, cdw3);
  put64(p + 16, mptr);
  put64(p + 24, sgl1.address);
  put32(p + 32, sgl1.length);
  p[39] = sgl1.type;
  put32(p + 40, cdw10);
  put32(p + 44, cdw11);
  put32(p + 48, cdw12);
  put32(p + 52, cdw13);
  put32(p + 56, cdw14);
  put32(p + 60, cdw15);
}

Sqe Sqe::decode(std::span<const std::uint8_t, kSqeSize> in) {
  const std::uint8_t* p = in.data();
  Sqe s;
  s.opcode = p[0];
  s.flags = p[1];
  s.cid = get16(p + 2);
  s.nsid = get32(p + 4);
  s.cdw2 = get32(p + 8);
  s.cdw3 = get32(p + 12);
  s.mptr = get64(p + 16);
  s.sgl1.address = get64(p + 24);
  s.sgl1.length = get32(p + 32);
  s.sgl1.type = p[39];
  s.cdw10 = get32(p + 40);
  s.cdw11 = get32(p + 44);
  s.cdw12 = get32(p + 48);
  s.cdw13 = get32(p + 52);
  s.cdw14 = get32(p + 56);
  s.cdw15 = get32(p + 60);
  return s;
}

void Cqe::encode(std::span<std::uint8_t, kCqeSize> out) const {
  std::uint8_t* p = out.data();
  put32(p, dw0);
  put32(p + 4, dw1);
  put16(p + 8, sqhd);
  put16(p + 10, sqid);
  put16(p + 12, cid);
  put16(p + 14, static_cast<std::uint16_t>((status << 1) | (phase ? 1 : 0)));
}

Cqe Cqe::decode(std::span<const std::uint8_t, kCqeSize> in) {
  const std::uint8_t* p = in.data();
  Cqe c;
  c.dw0 = get32(p);
  c.dw1 = get32(p + 4);
  c.sqhd = get16(p + 8);
  c.sqid = get16(p + 10);
  c.cid = get16(p + 12);
  std::uint16_t sf = get16(p + 14);
  c.status = static_cast<Status>(sf >> 1);
  c.phase = (sf & 1) != 0;
  return c;
}

// ---- Status names -----------------------------------------------------------------------------------

namespace {
const char* status_name(Status code) {
  switch (code) {
    case status::kSuccess: return "Successful Completion";
    case status::kInvalidOpcode: return "Invalid Command Opcode";
    case status::kInvalidField: return "Invalid Field in Command";
    case status::kCommandIdConflict: return "Command ID Conflict";
    case status::kDataTransferError: return "Data Transfer Error";
    case status::kInternalError: return "Internal Error";
    case status::kAbortRequested: return "Command Abort Requested";
    case status::kAbortSqDeleted: return "Command Aborted due to SQ Deletion";
    case status::kInvalidNamespace: return "Invalid Namespace or Format";
    case status::kCommandSequenceError: return "Command Sequence Error";
    case status::kSglInvalidLast: return "Invalid SGL Segment Descriptor";
    case status::kSglInvalidCount: return "Invalid Number of SGL Descriptors";
    case status::kSglInvalidDataLength: return "Data SGL Length Invalid";
    case status::kSglInvalidType: return "SGL Descriptor Type Invalid";
    case status::kSglInvalidOffset: return "SGL Offset Invalid";
    case status::kHostIdInconsistent: return "Host Identifier Inconsistent Format";
    case status::kKeepAliveExpired: return "Keep Alive Timer Expired";
    case status::kTransientTransportError: return "Transient Transport Error";
    case status::kLbaOutOfRange: return "LBA Out of Range";
    case status::kCapacityExceeded: return "Capacity Exceeded";
    case status::kNamespaceNotReady: return "Namespace Not Ready";
    case status::kInvalidQueueId: return "Invalid Queue Identifier";
    case status::kInvalidQueueSize: return "Invalid Queue Size";
    case status::kAsyncEventLimitExceeded: return "Asynchronous Event Request Limit Exceeded";
    case status::kInvalidLogPage: return "Invalid Log Page";
    case status::kFeatureNotSaveable: return "Feature Identifier Not Saveable";
    case status::kFeatureNotChangeable: return "Feature Not Changeable";
    case status::kConnectIncompatibleFormat: return "Connect Incompatible Format";
    case status::kConnectControllerBusy: return "Connect Controller Busy";
    case status::kConnectInvalidParameters: return "Connect Invalid Parameters";
    case status::kConnectRestartDiscovery: return "Connect Restart Discovery";
    case status::kConnectInvalidHost: return "Connect Invalid Host";
    case status::kDiscoveryRestart: return "Discovery Restart";
    case status::kAuthRequired: return "Authentication Required";
    default: return nullptr;
  }
}
}  // namespace

std::string status_to_string(Status s) {
  const char* name = status_name(status_code(s));
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s (SCT %xh SC %02xh)%s", name ? name : "Unknown status",
                static_cast<unsigned>(status_sct(s)), status_sc(s), status_dnr(s) ? " DNR" : "");
  return buf;
}

std::string_view command_name(const Sqe& sqe, bool admin_queue) {
  if (sqe.is_fabrics()) {
    switch (sqe.fctype()) {
      case fabrics_type::kPropertySet: return "Fabrics Property Set";
      case fabrics_type::kConnect: return "Fabrics Connect";
      case fabrics_type::kPropertyGet: return "Fabrics Property Get";
      case fabrics_type::kAuthenticationSend: return "Fabrics Authentication Send";
      case fabrics_type::kAuthenticationReceive: return "Fabrics Authentication Receive";
      case fabrics_type::kDisconnect: return "Fabrics Disconnect";
      default: return "Fabrics (unknown type)";
    }
  }
  if (admin_queue) {
    switch (sqe.opcode) {
      case admin_opcode::kDeleteIoSq: return "Delete I/O SQ";
      case admin_opcode::kCreateIoSq: return "Create I/O SQ";
      case admin_opcode::kGetLogPage: return "Get Log Page";
      case admin_opcode::kDeleteIoCq: return "Delete I/O CQ";
      case admin_opcode::kCreateIoCq: return "Create I/O CQ";
      case admin_opcode::kIdentify: return "Identify";
      case admin_opcode::kAbort: return "Abort";
      case admin_opcode::kSetFeatures: return "Set Features";
      case admin_opcode::kGetFeatures: return "Get Features";
      case admin_opcode::kAsyncEventRequest: return "Asynchronous Event Request";
      case admin_opcode::kKeepAlive: return "Keep Alive";
      default: return "Admin (unknown opcode)";
    }
  }
  switch (sqe.opcode) {
    case nvm_opcode::kFlush: return "Flush";
    case nvm_opcode::kWrite: return "Write";
    case nvm_opcode::kRead: return "Read";
    case nvm_opcode::kWriteZeroes: return "Write Zeroes";
    case nvm_opcode::kDatasetManagement: return "Dataset Management";
    default: return "NVM (unknown opcode)";
  }
}

// ---- Connect ----------------------------------------------------------------------------------------

namespace {
Sqe fabrics_sqe(std::uint16_t cid, std::uint8_t fctype) {
  Sqe s;
  s.opcode = kFabricsOpcode;
  s.cid = cid;
  s.nsid = fctype;
  s.sgl1 = sgl_transport(0);
  return s;
}
}  // namespace

Sqe make_connect(std::uint16_t cid, const ConnectCommand& cmd) {
  Sqe s = fabrics_sqe(cid, fabrics_type::kConnect);
  s.sgl1 = sgl_in_capsule(kConnectDataSize);
  s.cdw10 = cmd.recfmt | (static_cast<std::uint32_t>(cmd.qid) << 16);
  s.cdw11 = cmd.sqsize | (static_cast<std::uint32_t>(cmd.cattr) << 16);
  s.cdw12 = cmd.kato_ms;
  return s;
}

ConnectCommand parse_connect(const Sqe& sqe) {
  ConnectCommand c;
  c.recfmt = static_cast<std::uint16_t>(sqe.cdw10);
  c.qid = static_cast<std::uint16_t>(sqe.cdw10 >> 16);
  c.sqsize = static_cast<std::uint16_t>(sqe.cdw11);
  c.cattr = static_cast<std::uint8_t>(sqe.cdw11 >> 16);
  c.kato_ms = sqe.cdw12;
  return c;
}

void ConnectData::encode(std::span<std::uint8_t, kConnectDataSize> out) const {
  std::uint8_t* p = out.data();
  std::memset(p, 0, kConnectDataSize);
  std::memcpy(p, hostid.data(), hostid.size());
  put16(p + kConnectDataCntlidOffset, cntlid);
  put_string(p + kConnectDataSubnqnOffset, kNqnFieldSize - 1, subnqn, 0);
  put_string(p + kConnectDataHostnqnOffset, kNqnFieldSize - 1, hostnqn, 0);
}

ConnectData ConnectData::decode(std::span<const std::uint8_t, kConnectDataSize> in) {
  const std::uint8_t* p = in.data();
  ConnectData d;
  std::memcpy(d.hostid.data(), p, d.hostid.size());
  d.cntlid = get16(p + kConnectDataCntlidOffset);
  d.subnqn = get_string(p + kConnectDataSubnqnOffset, kNqnFieldSize);
  d.hostnqn = get_string(p + kConnectDataHostnqnOffset, kNqnFieldSize);
  return d;
}

std::uint32_t connect_success_dw0(std::uint16_t cntlid) { return cntlid; }

std::uint32_t connect_invalid_param_dw0(std::uint16_t ipo, bool in_data) {
  return ipo | (in_data ? (1u << 16) : 0u);
}

ConnectInvalidParam parse_connect_invalid_param(std::uint32_t dw0) {
  return {static_cast<std::uint16_t>(dw0), ((dw0 >> 16) & 1) != 0};
}

// ---- Property Get/Set ---------------------------------------------------------------------------

Sqe make_property_get(std::uint16_t cid, std::uint32_t offset, std::uint8_t size) {
  Sqe s = fabrics_sqe(cid, fabrics_type::kPropertyGet);
  s.cdw10 = size == 8 ? 1 : 0;
  s.cdw11 = offset;
  return s;
}

Sqe make_property_set(std::uint16_t cid, std::uint32_t offset, std::uint64_t value, std::uint8_t size) {
  Sqe s = fabrics_sqe(cid, fabrics_type::kPropertySet);
  s.cdw10 = size == 8 ? 1 : 0;
  s.cdw11 = offset;
  s.cdw12 = static_cast<std::uint32_t>(value);
  s.cdw13 = static_cast<std::uint32_t>(value >> 32);
  return s;
}

PropertyCommand parse_property(const Sqe& sqe) {
  PropertyCommand p;
  p.set = sqe.fctype() == fabrics_type::kPropertySet;
  p.size = (sqe.cdw10 & 0x7) == 1 ? 8 : 4;
  p.offset = sqe.cdw11;
  if (p.set) p.value = sqe.cdw12 | (static_cast<std::uint64_t>(sqe.cdw13) << 32);
  return p;
}

// ---- Identify -----------------------------------------------------------------------------------

Sqe make_identify(std::uint16_t cid, std::uint8_t cns_value, std::uint32_t nsid) {
  Sqe s;
  s.opcode = admin_opcode::kIdentify;
  s.cid = cid;
  s.nsid = nsid;
  s.sgl1 = sgl_transport(kIdentifySize);
  s.cdw10 = cns_value;
  return s;
}

IdentifyCommand parse_identify(const Sqe& sqe) {
  return {static_cast<std::uint8_t>(sqe.cdw10), static_cast<std::uint16_t>(sqe.cdw10 >> 16), sqe.nsid};
}

void IdentifyController::encode(std::span<std::uint8_t, kIdentifySize> out) const {
  std::uint8_t* p = out.data();
  std::memset(p, 0, kIdentifySize);
  put16(p + 0, vid);
  put16(p + 2, ssvid);
  put_string(p + 4, 20, serial, ' ');
  put_string(p + 24, 40, model, ' ');
  put_string(p + 64, 8, firmware, ' ');
  p[77] = mdts;
  put16(p + 78, cntlid);
  put32(p + 80, ver);
  put32(p + 92, oaes);
  put32(p + 96, ctratt);
  p[259] = aerl;
  p[261] = lpa;
  p[262] = elpe;
  put16(p + 320, kas);
  p[512] = sqes;
  p[513] = cqes;
  put16(p + 514, maxcmd);
  put32(p + 516, nn);
  put16(p + 520, oncs);
  p[525] = vwc;
  put32(p + 536, sgls);
  put_string(p + kIdCtrlSubnqnOffset, kNqnFieldSize - 1, subnqn, 0);
  put32(p + kIdCtrlIoccszOffset, ioccsz);
  put32(p + 1796, iorcsz);
  put16(p + 1800, icdoff);
  p[1802] = fcatt;
  p[1803] = msdbd;
  p[111] = cntrltype;
}

IdentifyController IdentifyController::decode(std::span<const std::uint8_t, kIdentifySize> in) {
  const std::uint8_t* p = in.data();
  IdentifyController c;
  c.vid = get16(p + 0);
  c.ssvid = get16(p + 2);
  c.serial = get_string(p + 4, 20);
  c.model = get_string(p + 24, 40);
  c.firmware = get_string(p + 64, 8);
  c.mdts = p[77];
  c.cntlid = get16(p + 78);
  c.ver = get32(p + 80);
  c.oaes = get32(p + 92);
  c.ctratt = get32(p + 96);
  c.aerl = p[259];
  c.lpa = p[261];
  c.elpe = p[262];
  c.kas = get16(p + 320);
  c.sqes = p[512];
  c.cqes = p[513];
  c.maxcmd = get16(p + 514);
  c.nn = get32(p + 516);
  c.oncs = get16(p + 520);
  c.vwc = p[525];
  c.sgls = get32(p + 536);
  c.subnqn = get_string(p + kIdCtrlSubnqnOffset, kNqnFieldSize);
  c.ioccsz = get32(p + kIdCtrlIoccszOffset);
  c.iorcsz = get32(p + 1796);
  c.icdoff = get16(p + 1800);
  c.fcatt = p[1802];
  c.msdbd = p[1803];
  c.cntrltype = p[111];
  return c;
}

void IdentifyNamespace::encode(std::span<std::uint8_t, kIdentifySize> out) const {
  std::uint8_t* p = out.data();
  std::memset(p, 0, kIdentifySize);
  put64(p + 0, nsze);
  put64(p + 8, ncap);
  put64(p + 16, nuse);
  p[24] = nsfeat;
  p[25] = nlbaf;
  p[26] = flbas;
  std::memcpy(p + 104, nguid.data(), nguid.size());
  std::memcpy(p + 120, eui64.data(), eui64.size());
  put32(p + 128, static_cast<std::uint32_t>(lbads) << 16);  // LBA format 0: MS 0, LBADS, RP 0
}

IdentifyNamespace IdentifyNamespace::decode(std::span<const std::uint8_t, kIdentifySize> in) {
  const std::uint8_t* p = in.data();
  IdentifyNamespace n;
  n.nsze = get64(p + 0);
  n.ncap = get64(p + 8);
  n.nuse = get64(p + 16);
  n.nsfeat = p[24];
  n.nlbaf = p[25];
  n.flbas = p[26];
  std::memcpy(n.nguid.data(), p + 104, n.nguid.size());
  std::memcpy(n.eui64.data(), p + 120, n.eui64.size());
  unsigned format = n.flbas & 0xf;
  n.lbads = format <= n.nlbaf && format < 64 ? p[128 + 4 * format + 2] : p[130];
  return n;
}

void encode_active_namespace_list(std::span<const std::uint32_t> nsids,
                                  std::span<std::uint8_t, kIdentifySize> out) {
  std::memset(out.data(), 0, kIdentifySize);
  std::size_t n = nsids.size() < kIdentifySize / 4 ? nsids.size() : kIdentifySize / 4;
  for (std::size_t i = 0; i < n; ++i) put32(out.data() + 4 * i, nsids[i]);
}

std::size_t decode_active_namespace_list(std::span<const std::uint8_t, kIdentifySize> in,
                                         std::span<std::uint32_t> out) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < kIdentifySize / 4 && n < out.size(); ++i) {
    std::uint32_t nsid = get32(in.data() + 4 * i);
    if (nsid == 0) break;
    out[n++] = nsid;
  }
  return n;
}

// ---- Features, keep alive, AER, log page ---------------------------------------------------------

Sqe make_set_features(std::uint16_t cid, std::uint8_t fid, std::uint32_t cdw11) {
  Sqe s;
  s.opcode = admin_opcode::kSetFeatures;
  s.cid = cid;
  s.sgl1 = sgl_transport(0);
  s.cdw10 = fid;
  s.cdw11 = cdw11;
  return s;
}

Sqe make_get_features(std::uint16_t cid, std::uint8_t fid) {
  Sqe s;
  s.opcode = admin_opcode::kGetFeatures;
  s.cid = cid;
  s.sgl1 = sgl_transport(0);
  s.cdw10 = fid;
  return s;
}

FeaturesCommand parse_features(const Sqe& sqe) {
  FeaturesCommand f;
  f.fid = static_cast<std::uint8_t>(sqe.cdw10);
  f.save = sqe.opcode == admin_opcode::kSetFeatures && (sqe.cdw10 >> 31) != 0;
  f.select = sqe.opcode == admin_opcode::kGetFeatures ? static_cast<std::uint8_t>((sqe.cdw10 >> 8) & 7) : 0;
  f.cdw11 = sqe.cdw11;
  return f;
}

std::uint32_t number_of_queues_dw(std::uint16_t sq_count, std::uint16_t cq_count) {
  auto zb = [](std::uint16_t n) { return static_cast<std::uint32_t>(n == 0 ? 0 : n - 1); };
  return zb(sq_count) | (zb(cq_count) << 16);
}

Sqe make_set_number_of_queues(std::uint16_t cid, std::uint16_t sq_count, std::uint16_t cq_count) {
  return make_set_features(cid, feature::kNumberOfQueues, number_of_queues_dw(sq_count, cq_count));
}

QueueCounts parse_number_of_queues(std::uint32_t dw) {
  return {static_cast<std::uint16_t>((dw & 0xffff) + 1), static_cast<std::uint16_t>((dw >> 16) + 1)};
}

Sqe make_keep_alive(std::uint16_t cid) {
  Sqe s;
  s.opcode = admin_opcode::kKeepAlive;
  s.cid = cid;
  s.sgl1 = sgl_transport(0);
  return s;
}

Sqe make_async_event_request(std::uint16_t cid) {
  Sqe s;
  s.opcode = admin_opcode::kAsyncEventRequest;
  s.cid = cid;
  s.sgl1 = sgl_transport(0);
  return s;
}

Sqe make_get_log_page(std::uint16_t cid, std::uint8_t lid, std::uint32_t bytes, std::uint64_t offset,
                      std::uint32_t nsid) {
  Sqe s;
  s.opcode = admin_opcode::kGetLogPage;
  s.cid = cid;
  s.nsid = nsid;
  s.sgl1 = sgl_transport(bytes);
  std::uint32_t numd = bytes / 4 == 0 ? 0 : bytes / 4 - 1;
  s.cdw10 = lid | ((numd & 0xffff) << 16);
  s.cdw11 = numd >> 16;
  s.cdw12 = static_cast<std::uint32_t>(offset);
  s.cdw13 = static_cast<std::uint32_t>(offset >> 32);
  return s;
}

GetLogPageCommand parse_get_log_page(const Sqe& sqe) {
  GetLogPageCommand g;
  g.lid = static_cast<std::uint8_t>(sqe.cdw10);
  std::uint32_t numd0 = (sqe.cdw10 >> 16) | ((sqe.cdw11 & 0xffff) << 16);
  g.numd = numd0 + 1;
  g.offset = sqe.cdw12 | (static_cast<std::uint64_t>(sqe.cdw13) << 32);
  return g;
}

// ---- Discovery --------------------------------------------------------------------------------------

std::vector<std::uint8_t> encode_discovery_log(std::uint64_t genctr, std::span<const DiscoveryLogEntry> entries) {
  std::vector<std::uint8_t> out(kDiscoveryLogHeaderSize + entries.size() * kDiscoveryLogEntrySize, 0);
  std::uint8_t* p = out.data();
  put64(p, genctr);
  put64(p + 8, entries.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const DiscoveryLogEntry& e = entries[i];
    std::uint8_t* r = p + kDiscoveryLogHeaderSize + i * kDiscoveryLogEntrySize;
    r[0] = e.trtype;
    r[1] = e.adrfam;
    r[2] = e.subtype;
    r[3] = e.treq;
    put16(r + 4, e.portid);
    put16(r + 6, e.cntlid);
    put16(r + 8, e.asqsz);
    put_string(r + 32, 32, e.trsvcid, ' ');
    put_string(r + 256, kNqnFieldSize - 1, e.subnqn, 0);
    put_string(r + 512, 256, e.traddr, ' ');
    r[768] = e.sectype;
  }
  return out;
}

DiscoveryLog decode_discovery_log(std::span<const std::uint8_t> bytes) {
  DiscoveryLog log;
  if (bytes.size() < 16) return log;
  log.genctr = get64(bytes.data());
  log.numrec = get64(bytes.data() + 8);
  for (std::size_t off = kDiscoveryLogHeaderSize; off + kDiscoveryLogEntrySize <= bytes.size() &&
                                                   log.entries.size() < log.numrec;
       off += kDiscoveryLogEntrySize) {
    const std::uint8_t* r = bytes.data() + off;
    DiscoveryLogEntry e;
    e.trtype = r[0];
    e.adrfam = r[1];
    e.subtype = r[2];
    e.treq = r[3];
    e.portid = get16(r + 4);
    e.cntlid = get16(r + 6);
    e.asqsz = get16(r + 8);
    e.trsvcid = get_string(r + 32, 32);
    e.subnqn = get_string(r + 256, kNqnFieldSize);
    e.traddr = get_string(r + 512, 256);
    e.sectype = r[768];
    log.entries.push_back(std::move(e));
  }
  return log;
}

// ---- NVM --------------------------------------------------------------------------------------------

namespace {
Sqe rw_sqe(std::uint8_t opcode, std::uint16_t cid, std::uint32_t nsid, std::uint64_t slba, std::uint32_t nlb) {
  Sqe s;
  s.opcode = opcode;
  s.cid = cid;
  s.nsid = nsid;
  s.cdw10 = static_cast<std::uint32_t>(slba);
  s.cdw11 = static_cast<std::uint32_t>(slba >> 32);
  s.cdw12 = (nlb == 0 ? 0 : nlb - 1) & 0xffff;
  return s;
}
}  // namespace

Sqe make_read(std::uint16_t cid, std::uint32_t nsid, std::uint64_t slba, std::uint32_t nlb,
              std::uint32_t data_len) {
  Sqe s = rw_sqe(nvm_opcode::kRead, cid, nsid, slba, nlb);
  s.sgl1 = sgl_transport(data_len);
  return s;
}

Sqe make_write(std::uint16_t cid, std::uint32_t nsid, std::uint64_t slba, std::uint32_t nlb,
               std::uint32_t data_len, bool in_capsule) {
  Sqe s = rw_sqe(nvm_opcode::kWrite, cid, nsid, slba, nlb);
  s.sgl1 = in_capsule ? sgl_in_capsule(data_len) : sgl_transport(data_len);
  return s;
}

Sqe make_flush(std::uint16_t cid, std::uint32_t nsid) {
  Sqe s;
  s.opcode = nvm_opcode::kFlush;
  s.cid = cid;
  s.nsid = nsid;
  s.sgl1 = sgl_transport(0);
  return s;
}

RwCommand parse_rw(const Sqe& sqe) {
  return {sqe.cdw10 | (static_cast<std::uint64_t>(sqe.cdw11) << 32), (sqe.cdw12 & 0xffff) + 1};
}

}  // namespace nvqos::nvmf
