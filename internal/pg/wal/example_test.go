package wal_test

import (
	"fmt"

	"github.com/jackc/pglogrepl"

	"github.com/pgvault/pgvault/internal/pg/wal"
)

func ExampleSegmentName() {
	start, _ := pglogrepl.ParseLSN("0/3000028")
	fmt.Println(wal.SegmentName(1, start, wal.DefaultSegmentSize))
	fmt.Println(wal.BackupHistoryName(1, start, wal.DefaultSegmentSize))
	tli, segStart, _ := wal.ParseSegmentName("00000002000000010000002A", wal.DefaultSegmentSize)
	fmt.Println(tli, segStart)
	// Output:
	// 000000010000000000000003
	// 000000010000000000000003.00000028.backup
	// 2 1/2A000000
}

func ExampleRequiredSegments() {
	// 00000003.history: timeline 1 forked into 2 at 0/3000100, 2 into 3 at
	// 0/5000000.
	history, _ := wal.ParseHistory([]byte("1\t0/3000100\tno recovery target specified\n2\t0/5000000\tafter LSN 0/4FFFFD0\n"))
	start, _ := pglogrepl.ParseLSN("0/1000028") // a base backup on timeline 1
	stop, _ := pglogrepl.ParseLSN("0/6000000")  // the recovery target on timeline 3
	runs, err := wal.RequiredSegments(history, 3, 1, start, stop, wal.DefaultSegmentSize)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range runs {
		for _, s := range r.Segments() {
			fmt.Println(s.Name(wal.DefaultSegmentSize))
		}
	}
	// Output:
	// 000000010000000000000001
	// 000000010000000000000002
	// 000000020000000000000003
	// 000000020000000000000004
	// 000000030000000000000005
	// 000000030000000000000006
}
