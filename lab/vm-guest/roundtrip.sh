# lab/vm run's default script: a filesystem round trip on the new disk through the kernel initiator.
# Runs under sh -e in the guest after login; $DISK is the session's disk (lab/README.md).
mkfs.ext4 -q -F "$DISK"
mkdir -p /mnt/lun
mount -t ext4 "$DISK" /mnt/lun
for i in 1 2 3 4 5 6 7 8; do
    dd if=/dev/urandom of="/mnt/lun/file$i" bs=64k count=$i 2> /dev/null
done
(cd /mnt/lun && md5sum file*) > /tmp/md5
cat /tmp/md5
sync
umount /mnt/lun
# Nothing of the files stays cached: the check reads them back from the array.
echo 3 > /proc/sys/vm/drop_caches
mount -t ext4 "$DISK" /mnt/lun
(cd /mnt/lun && md5sum -c /tmp/md5)
umount /mnt/lun
fsck.ext4 -fn "$DISK"
sanlab_logout
echo "round trip verified"
