package bench

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"strconv"
	"strings"
)

// ChartGroup is one step: a bar per tool, on its own scale.
type ChartGroup struct {
	Title string
	Bars  []ChartBar
}

// ChartBar is one tool's median with its range.
type ChartBar struct {
	Label            string
	Median, Min, Max float64
	MB               float64 // shown after the time when the tools' amounts differ; NaN: not shown
}

// ChartSteps are the steps the chart shows (backup and restore times).
var ChartSteps = []string{StepFull, StepIncrChange, StepIncrBench, StepRestore, StepFirstQuery, StepMountRead}

// ChartGroups turns the wall times of steps into chart groups.
func ChartGroups(r *Results, steps []string) []ChartGroup {
	var groups []ChartGroup
	for _, step := range steps {
		g := ChartGroup{Title: step}
		for _, row := range r.Rows() {
			if row.Step != step {
				continue
			}
			if st := row.Stat(Wall); st.OK() {
				bar := ChartBar{Label: row.Tool, Median: st.Median, Min: st.Min, Max: st.Max, MB: math.NaN()}
				if step == StepRestore || step == StepMountRead {
					bar.MB = row.Stat(MB).Median
				}
				g.Bars = append(g.Bars, bar)
			}
		}
		if len(g.Bars) > 0 {
			groups = append(groups, g)
		}
	}
	return groups
}

// Chart geometry, in pixels.
const (
	chartW     = 1100
	fontScale  = 2
	charW      = (glyphW + 1) * fontScale
	lineH      = (glyphH + 4) * fontScale
	barH       = 16
	rowH       = 24
	labelW     = 26 * charW // tool names
	valueW     = 17 * charW // value after the bar
	margin     = 16
	groupGap   = 14
	titleLines = 2
)

var (
	colBackground = color.RGBA{255, 255, 255, 255}
	colText       = color.RGBA{20, 20, 20, 255}
	colGrid       = color.RGBA{225, 225, 225, 255}
	colWhisker    = color.RGBA{40, 40, 40, 255}
	toolColours   = map[string]color.RGBA{
		ToolPgvault:       {31, 119, 180, 255},
		ToolPgvaultMount:  {23, 190, 207, 255},
		ToolPgvaultStream: {120, 170, 215, 255},
		ToolBasebackup:    {127, 127, 127, 255},
		ToolPgbackrest:    {255, 127, 14, 255},
		ToolRestic:        {44, 160, 44, 255},
		ToolBarman:        {148, 103, 189, 255},
	}
)

// RenderChart draws horizontal bars, one group per step, each group on
// its own linear scale starting at zero, and returns the PNG.
func RenderChart(title, subtitle string, groups []ChartGroup) ([]byte, error) {
	h := margin*2 + titleLines*lineH + groupGap
	for _, g := range groups {
		h += lineH + len(g.Bars)*rowH + groupGap
	}
	img := image.NewRGBA(image.Rect(0, 0, chartW, h))
	draw.Draw(img, img.Bounds(), &image.Uniform{colBackground}, image.Point{}, draw.Src)
	y := margin
	drawText(img, margin, y, title, colText)
	y += lineH
	drawText(img, margin, y, subtitle, colText)
	y += lineH + groupGap
	barX := margin + labelW
	barMax := chartW - margin - valueW - barX
	for _, g := range groups {
		drawText(img, margin, y, g.Title, colText)
		y += lineH
		top := 0.0
		for _, b := range g.Bars {
			top = math.Max(top, math.Max(b.Max, b.Median))
		}
		if top <= 0 {
			top = 1
		}
		fill(img, barX, y, 1, len(g.Bars)*rowH, colGrid)
		for _, b := range g.Bars {
			drawText(img, margin+charW, y+(rowH-glyphH*fontScale)/2, b.Label, colText)
			w := int(math.Round(b.Median / top * float64(barMax)))
			col, ok := toolColours[b.Label]
			if !ok {
				col = color.RGBA{100, 100, 100, 255}
			}
			fill(img, barX, y+(rowH-barH)/2, max(w, 1), barH, col)
			if b.Max > b.Min {
				x0 := barX + int(math.Round(b.Min/top*float64(barMax)))
				x1 := barX + int(math.Round(b.Max/top*float64(barMax)))
				cy := y + rowH/2
				fill(img, x0, cy, x1-x0+1, 2, colWhisker)
				fill(img, x0, cy-4, 2, 10, colWhisker)
				fill(img, x1-1, cy-4, 2, 10, colWhisker)
				w = max(w, x1-barX)
			}
			value := fmt.Sprintf("%s s", Num(b.Median))
			if !math.IsNaN(b.MB) && b.MB > 0 {
				value += fmt.Sprintf(", %s MB", Num(b.MB))
			}
			drawText(img, barX+w+charW, y+(rowH-glyphH*fontScale)/2, value, colText)
			y += rowH
		}
		y += groupGap
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func fill(img *image.RGBA, x, y, w, h int, c color.RGBA) {
	draw.Draw(img, image.Rect(x, y, x+w, y+h), &image.Uniform{c}, image.Point{}, draw.Src)
}

// drawText draws s with the bitmap font, top-left at (x, y).
func drawText(img *image.RGBA, x, y int, s string, c color.RGBA) {
	for _, r := range s {
		for gy, row := range glyph(r) {
			for gx, p := range row {
				if p == '#' {
					fill(img, x+gx*fontScale, y+gy*fontScale, fontScale, fontScale, c)
				}
			}
		}
		x += charW
	}
}

// ParseResultsTable reads back the results table of a rendered section
// (wall and MB columns: median, min, max), so the chart can be drawn
// again without measuring again.
func ParseResultsTable(md string) *Results {
	r := &Results{}
	for _, line := range strings.Split(md, "\n") {
		f := strings.Split(line, "|")
		if len(f) < 10 || index(StepOrder, strings.TrimSpace(f[1])) == len(StepOrder) {
			continue
		}
		step, tool := strings.TrimSpace(f[1]), strings.TrimSpace(f[2])
		wall, mb := parseCell(f[3]), parseCell(f[7])
		if math.IsNaN(wall[0]) {
			continue
		}
		// Three samples that give back the same median and range.
		for i := 0; i < 3; i++ {
			s := NewSample()
			s.Wall, s.MB = wall[i], mb[i]
			r.Add(step, tool, s)
		}
	}
	return r
}

// parseCell turns "3.50 (2.54-3.68)" or "3.50" into min, median, max.
func parseCell(c string) [3]float64 {
	nan := math.NaN()
	c = strings.TrimSpace(c)
	med, rng, _ := strings.Cut(c, " (")
	m, err := strconv.ParseFloat(med, 64)
	if err != nil {
		return [3]float64{nan, nan, nan}
	}
	lo, hi := m, m
	if rng != "" {
		a, b, _ := strings.Cut(strings.TrimSuffix(rng, ")"), "-")
		if x, err := strconv.ParseFloat(a, 64); err == nil {
			lo = x
		}
		if x, err := strconv.ParseFloat(b, 64); err == nil {
			hi = x
		}
	}
	return [3]float64{lo, m, hi}
}
