-- sanlab's own formats inside iSCSI, for Wireshark and tshark (issue 18):
--   * the array-to-array replication commands C0h-C7h (docs/replication-protocol.md), with the
--     READ JOURNAL reply (header and entries, docs/journal.md) and the ATTACH JOURNAL list;
--   * command-device blocks "SLCB" and edited data "SLED" (docs/command-device.md).
-- Usage: tshark -X lua_script:lab/wireshark/sanlab.lua -r capture.pcap -d tcp.port==3260,iscsi -V
-- or copy it into Wireshark's personal plugins folder.
--
-- A post-dissector: after Wireshark's own iSCSI dissector has framed (and reassembled) each PDU, it
-- reads the PDU again from the tvb the iSCSI fields point into, so PDUs split over TCP segments are
-- decoded as well.  Layouts assume no header or data digests (sanlab's default).  Data-In replies
-- are matched to their command by Initiator Task Tag, in capture order.

local p = Proto("sanlab", "sanlab replication and command device")

local REPL = {
  [0xC0] = "REGISTER PAIR", [0xC1] = "SET PAIR STATE", [0xC2] = "GET PAIR STATUS",
  [0xC3] = "READ DIFFERENCE BITMAP", [0xC4] = "DELETE PAIR", [0xC5] = "FORWARD WRITE (reserved)",
  [0xC6] = "READ JOURNAL", [0xC7] = "ATTACH JOURNAL",
}
local STATUS = {
  [0] = "done", [1] = "refused by the array", [2] = "input parameters do not fit",
  [3] = "failed in the array", [4] = "unreachable", [5] = "pair instruction refused",
}

local f = {
  repl_op = ProtoField.uint8("sanlab.repl.opcode", "Replication command", base.HEX, REPL),
  pair_id = ProtoField.uint64("sanlab.repl.pair_id", "Pair ID", base.HEX),
  plen = ProtoField.uint32("sanlab.repl.parameter_list_length", "Parameter list length"),
  new_state = ProtoField.uint8("sanlab.repl.new_state", "New state"),
  reason = ProtoField.uint8("sanlab.repl.reason", "Reason"),
  from_seq = ProtoField.uint64("sanlab.journal.from_sequence", "From sequence number"),
  alloc = ProtoField.uint32("sanlab.journal.allocation_length", "Allocation length"),
  j_in = ProtoField.uint64("sanlab.journal.journal_in", "Journal-in"),
  j_out = ProtoField.uint64("sanlab.journal.journal_out", "Journal-out"),
  j_committed = ProtoField.uint64("sanlab.journal.committed", "Committed"),
  j_oldest = ProtoField.double("sanlab.journal.oldest_time", "Oldest time"),
  j_backlog = ProtoField.uint64("sanlab.journal.backlog_bytes", "Backlog bytes"),
  j_count = ProtoField.uint32("sanlab.journal.entry_count", "Entry count"),
  j_flags = ProtoField.uint8("sanlab.journal.flags", "Flags", base.HEX),
  e_seq = ProtoField.uint64("sanlab.journal.entry.sequence", "Sequence number"),
  e_time = ProtoField.double("sanlab.journal.entry.time", "Time"),
  e_pair = ProtoField.uint64("sanlab.journal.entry.pair_id", "Pair ID", base.HEX),
  e_lba = ProtoField.uint64("sanlab.journal.entry.lba", "LBA"),
  e_len = ProtoField.uint32("sanlab.journal.entry.data_length", "Data length"),
  e_crc = ProtoField.uint32("sanlab.journal.entry.crc32", "Data CRC32", base.HEX),
  a_pjid = ProtoField.uint64("sanlab.attach.primary_journal_id", "Primary journal ID"),
  a_pj = ProtoField.string("sanlab.attach.primary_journal", "Primary journal"),
  a_sj = ProtoField.string("sanlab.attach.secondary_journal", "Secondary journal"),
  cb_id = ProtoField.uint32("sanlab.cmd.id", "Identification number", base.HEX),
  cb_hops = ProtoField.uint8("sanlab.cmd.hop_count", "Hop count"),
  cb_count = ProtoField.uint16("sanlab.cmd.parameter_count", "Parameter count"),
  cb_len = ProtoField.uint32("sanlab.cmd.block_length", "Block length"),
  cb_dest = ProtoField.string("sanlab.cmd.destination", "Transfer destination"),
  cb_proc = ProtoField.uint16("sanlab.cmd.process", "Process number", base.HEX),
  cb_flags = ProtoField.uint8("sanlab.cmd.control_flags", "Control flags", base.HEX),
  cb_input = ProtoField.string("sanlab.cmd.input", "Input parameters"),
  ed_id = ProtoField.uint32("sanlab.ed.id", "Identification number", base.HEX),
  ed_count = ProtoField.uint16("sanlab.ed.result_count", "Result count"),
  ed_len = ProtoField.uint32("sanlab.ed.data_length", "Data length"),
  ed_proc = ProtoField.uint16("sanlab.ed.process", "Process number", base.HEX),
  ed_status = ProtoField.uint8("sanlab.ed.status", "Status", base.HEX, STATUS),
  ed_array = ProtoField.string("sanlab.ed.array", "Array"),
  ed_output = ProtoField.string("sanlab.ed.output", "Output"),
}
local list = {}
for _, v in pairs(f) do list[#list + 1] = v end
p.fields = list

local iscsi_opcode = Field.new("iscsi.opcode")
local pending = {}  -- ITT -> replication opcode of a command whose data is still to come

local function pdu_data(tvb, off)
  -- The data segment of the PDU at off: (offset, length), no digests (RFC 7143 §11.2).
  local ahs = tvb(off + 4, 1):uint() * 4
  local dsl = tvb(off + 5, 3):uint()
  local start = off + 48 + ahs
  if dsl == 0 or start + dsl > tvb:len() then return nil end
  return start, dsl
end

local function command_block(tree, tvb, off, len)
  local t = tree:add(p, tvb(off, len), "sanlab command block (SLCB)")
  t:add(f.cb_hops, tvb(off + 5, 1))
  t:add(f.cb_count, tvb(off + 6, 2))
  t:add(f.cb_len, tvb(off + 8, 4))
  t:add(f.cb_id, tvb(off + 12, 4))
  local total = math.min(tvb(off + 8, 4):uint(), len)
  local pos = 16
  while pos + 4 <= total do
    local ptype, plen = tvb(off + pos, 1):uint(), tvb(off + pos + 2, 2):uint()
    local b = off + pos + 4
    if pos + 4 + plen > total then break end
    if ptype == 1 then
      local n, q, names = tvb(b, 1):uint(), b + 2, {}
      for _ = 1, n do
        local l = tvb(q, 1):uint()
        names[#names + 1] = tvb(q + 1, l):string()
        q = q + 1 + l
      end
      t:add(f.cb_dest, tvb(b, plen), table.concat(names, ","))
    elseif ptype == 2 then
      local c = t:add(f.cb_proc, tvb(b, 2))
      c:add(f.cb_flags, tvb(b + 2, 1))
      local n = tvb(b + 4, 4):uint()
      if n > 0 then c:add(f.cb_input, tvb(b + 8, n)) end
    end
    pos = pos + 4 + plen
  end
end

local function edited_data(tree, tvb, off, len)
  local t = tree:add(p, tvb(off, len), "sanlab edited data (SLED)")
  t:add(f.ed_count, tvb(off + 6, 2))
  t:add(f.ed_len, tvb(off + 8, 4))
  t:add(f.ed_id, tvb(off + 12, 4))
  local total = math.min(tvb(off + 8, 4):uint(), len)
  local pos = 16
  for _ = 1, tvb(off + 6, 2):uint() do
    if pos + 12 > total then break end
    local rlen = tvb(off + pos, 4):uint()
    local b = off + pos
    local r = t:add(f.ed_proc, tvb(b + 4, 2))
    r:add(f.ed_status, tvb(b + 6, 1))
    local m = tvb(b + 7, 1):uint()
    if m > 0 then r:add(f.ed_array, tvb(b + 8, m)) end
    local k = tvb(b + 8 + m, 4):uint()
    if k > 0 and 12 + m + k <= rlen then r:add(f.ed_output, tvb(b + 12 + m, k)) end
    pos = pos + rlen
  end
end

local function journal_reply(tree, tvb, off, len)
  if len < 48 then return end
  local t = tree:add(p, tvb(off, len), "sanlab READ JOURNAL data")
  t:add(f.j_in, tvb(off, 8))
  t:add(f.j_out, tvb(off + 8, 8))
  t:add(f.j_committed, tvb(off + 16, 8))
  t:add(f.j_oldest, tvb(off + 24, 8))
  t:add(f.j_backlog, tvb(off + 32, 8))
  t:add(f.j_count, tvb(off + 40, 4))
  t:add(f.j_flags, tvb(off + 44, 1))
  local pos = 48
  for _ = 1, tvb(off + 40, 4):uint() do
    if pos + 40 > len then break end
    local b = off + pos
    local e = t:add(f.e_seq, tvb(b, 8))
    e:add(f.e_time, tvb(b + 8, 8))
    e:add(f.e_pair, tvb(b + 16, 8))
    e:add(f.e_lba, tvb(b + 24, 8))
    e:add(f.e_len, tvb(b + 32, 4))
    e:add(f.e_crc, tvb(b + 36, 4))
    pos = pos + 40 + tvb(b + 32, 4):uint()
  end
end

local function replication_cdb(tree, tvb, cdb)
  local op = tvb(cdb, 1):uint()
  local t = tree:add(p, tvb(cdb, 16), "sanlab " .. REPL[op])
  t:add(f.repl_op, tvb(cdb, 1))
  if op == 0xC6 then
    t:add(f.from_seq, tvb(cdb + 1, 8))
    t:add(f.alloc, tvb(cdb + 9, 4))
    return
  end
  t:add(f.pair_id, tvb(cdb + 1, 8))
  if op == 0xC1 then
    t:add(f.new_state, tvb(cdb + 9, 1))
    t:add(f.reason, tvb(cdb + 10, 1))
  elseif op == 0xC0 or op == 0xC7 then
    t:add(f.plen, tvb(cdb + 10, 4))
  end
end

local function attach_list(tree, tvb, off, len)
  if len < 72 then return end
  local t = tree:add(p, tvb(off, 72), "sanlab ATTACH JOURNAL parameter list")
  t:add(f.a_pjid, tvb(off, 8))
  t:add(f.a_pj, tvb(off + 8, 32))
  t:add(f.a_sj, tvb(off + 40, 32))
end

local function data_of(tree, tvb, off, itt, dstart, dlen)
  local magic = dlen >= 16 and tvb(dstart, 4):string() or ""
  if magic == "SLCB" then command_block(tree, tvb, dstart, dlen)
  elseif magic == "SLED" then edited_data(tree, tvb, dstart, dlen)
  elseif pending[itt] == 0xC6 then journal_reply(tree, tvb, dstart, dlen)
  elseif pending[itt] == 0xC7 then attach_list(tree, tvb, dstart, dlen)
  end
end

function p.dissector(_, _, tree)
  for _, fi in ipairs({ iscsi_opcode() }) do
    local tvb, off = fi.source, fi.offset  -- the (reassembled) tvb the PDU is in, and where it starts
    if off + 48 <= tvb:len() then
      local op = fi.value
      local itt = tvb(off + 16, 4):uint()
      local dstart, dlen = pdu_data(tvb, off)
      if op == 0x01 then
        local cdb0 = tvb(off + 32, 1):uint()
        if REPL[cdb0] then
          pending[itt] = cdb0
          replication_cdb(tree, tvb, off + 32)
        else
          pending[itt] = nil
        end
        if dstart then data_of(tree, tvb, off, itt, dstart, dlen) end
      elseif (op == 0x05 or op == 0x25) and dstart then
        data_of(tree, tvb, off, itt, dstart, dlen)
      end
    end
  end
end

register_postdissector(p)
